"""`plat deploy` validates plat.yaml before anything is sent: in the CLI when no
daemon runs (none is started for a bad manifest), by the daemon when one does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, make_runner

BAD_MANIFESTS = [
    ("name: hi\nruntime: python\ntimeot: 30s\n", ["unknown key 'timeot'", "timeout"]),
    ("name: Hi_There\nruntime: python\n", ["'name'", "lowercase"]),
    ("name: hi\nruntime: python\ntimeout: soon\n", ["'timeout'", "30s"]),
    ("name: hi\nruntime: python\nresources: {memory: lots}\n", ["resources.memory", "Mi"]),
    ("name: hi\nruntime: cobol\n", ["'runtime'", "python"]),
    ("name: hi\nruntime: python\nenv: [1, 2\n", ["YAML syntax error", "line"]),
    ("name: '[bold]hi'\nruntime: python\n", ["'[bold]hi' is not a valid name"]),
    ("- name: hi\n", ["expected a mapping"]),
]


def deploy_bad(plat: PlatRunner, folder: Path, manifest: str, expected: list[str]) -> None:
    folder.mkdir()
    (folder / "plat.yaml").write_text(manifest)
    (folder / "handler.py").write_text("def handle(e, c):\n    return 'x'\n")
    proc = plat.run("deploy", str(folder), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(folder / "plat.yaml") in proc.stderr
    for text in expected:
        assert text in proc.stderr


@pytest.mark.parametrize(("manifest", "expected"), BAD_MANIFESTS)
def test_bad_manifest_is_one_clear_error(
    tmp_path: Path, manifest: str, expected: list[str]
) -> None:
    plat = make_runner(tmp_path)
    deploy_bad(plat, tmp_path / "fn", manifest, expected)
    # Nothing was sent: no daemon was started for a bad manifest.
    assert not (plat.home / "run" / "plat.sock").exists()


@pytest.mark.parametrize(("manifest", "expected"), BAD_MANIFESTS)
def test_a_running_daemon_gives_the_same_clear_error(
    plat: PlatRunner, tmp_path: Path, manifest: str, expected: list[str]
) -> None:
    deploy_bad(plat, tmp_path / "fn", manifest, expected)
    listed = json.loads(plat.run("ls", "--json").stdout)
    assert listed == []


def test_missing_manifest_hints_at_init(tmp_path: Path) -> None:
    plat = make_runner(tmp_path)
    proc = plat.run("deploy", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert "no plat.yaml" in proc.stderr
    assert "plat init" in proc.stderr


def test_a_running_daemon_and_a_folder_without_manifest(plat: PlatRunner, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a function\n")
    proc = plat.run("deploy", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no plat.yaml" in proc.stderr
    assert "plat init" in proc.stderr
