"""`plat deploy` validates plat.yaml before anything is sent (no daemon needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import make_runner


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("name: hi\nruntime: python\ntimeot: 30s\n", ["unknown key 'timeot'", "timeout"]),
        ("name: Hi_There\nruntime: python\n", ["'name'", "lowercase"]),
        ("name: hi\nruntime: python\ntimeout: soon\n", ["'timeout'", "30s"]),
        ("name: hi\nruntime: python\nresources: {memory: lots}\n", ["resources.memory", "Mi"]),
        ("name: hi\nruntime: cobol\n", ["'runtime'", "python"]),
        ("name: hi\nruntime: python\nenv: [1, 2\n", ["YAML syntax error", "line"]),
    ],
)
def test_bad_manifest_is_one_clear_error(
    tmp_path: Path, manifest: str, expected: list[str]
) -> None:
    plat = make_runner(tmp_path)
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "plat.yaml").write_text(manifest)
    (folder / "handler.py").write_text("def handle(e, c):\n    return 'x'\n")
    proc = plat.run("deploy", str(folder), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(folder / "plat.yaml") in proc.stderr
    for text in expected:
        assert text in proc.stderr
    # Nothing was sent: no daemon was started for a bad manifest.
    assert not (plat.home / "run" / "plat.sock").exists()


def test_missing_manifest_hints_at_init(tmp_path: Path) -> None:
    plat = make_runner(tmp_path)
    proc = plat.run("deploy", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert "no plat.yaml" in proc.stderr
    assert "plat init" in proc.stderr
