"""plat.yaml's ``adapter:``: the kinds each runtime has, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from plat.daemon.drivers.versions import Release
from plat.daemon.serving.instances import instance_spec
from plat.errors import ManifestError
from plat.manifest import load_manifest, validate_manifest


def _load(tmp_path: Path, text: str) -> str:
    (tmp_path / "plat.yaml").write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    return str(info.value)


@pytest.mark.parametrize(
    ("runtime", "kind"),
    [
        ("python", "plat"),
        ("python", "wsgi"),
        ("python", "asgi"),
        ("python", "lambda"),
        ("node", "plat"),
        ("node", "express"),
    ],
)
def test_each_runtime_takes_its_own_kinds(runtime: str, kind: str) -> None:
    manifest = validate_manifest({"name": "a", "runtime": runtime, "adapter": kind})
    assert manifest.adapter == kind
    assert manifest.to_dict()["adapter"] == kind
    assert validate_manifest(manifest.to_dict()) == manifest  # what the daemon stores


def test_no_adapter_key_dumps_as_before() -> None:
    manifest = validate_manifest({"name": "a", "runtime": "python"})
    assert manifest.adapter is None
    assert "adapter" not in manifest.to_dict()


# Each row: the adapter line, what the error must say.
BAD = [
    pytest.param("adapter: flask\n", "Input should be 'plat', 'wsgi'", id="unknown-kind"),
    pytest.param("adapter: WSGI\n", "Input should be", id="case-matters"),
    pytest.param("adapter: express\n", "no 'express' adapter; use one of: plat, wsgi", id="other"),
    pytest.param("adapter: [wsgi]\n", "Input should be", id="a-list"),
    pytest.param("adapter: {kind: wsgi}\n", "Input should be", id="a-mapping"),
    pytest.param("adapter: 3\n", "Input should be", id="a-number"),
    pytest.param("adapter: ''\n", "Input should be", id="empty"),
    pytest.param('adapter: "wsgi\\0"\n', "Input should be", id="nul"),
    pytest.param("adapter: " + "w" * 100_000 + "\n", "Input should be", id="huge"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_bad_adapters_name_the_field_and_the_choices(
    tmp_path: Path, line: str, message: str
) -> None:
    error = _load(tmp_path, "name: fn\nruntime: python\n" + line)
    assert "'adapter'" in error
    assert message in error
    assert len(error) < 2000  # a huge value is not echoed back whole


def test_a_dockerfile_function_takes_no_adapter(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    error = _load(tmp_path, "name: fn\nruntime: dockerfile\nadapter: wsgi\n")
    assert "takes no adapter" in error


def test_node_has_no_wsgi(tmp_path: Path) -> None:
    error = _load(tmp_path, "name: fn\nruntime: node\nadapter: wsgi\n")
    assert "the node runtime has no 'wsgi' adapter; use one of: plat, express" in error


def test_a_bad_runtime_is_the_one_error_reported(tmp_path: Path) -> None:
    error = _load(tmp_path, "name: fn\nruntime: cobol\nadapter: wsgi\n")
    assert "'runtime'" in error
    assert "'adapter'" not in error


def test_the_kind_timeout_and_memory_reach_the_instance() -> None:
    manifest = validate_manifest(
        {
            "name": "a",
            "runtime": "python",
            "adapter": "lambda",
            "timeout": "90s",
            "resources": {"memory": "512Mi"},
        }
    )
    env = instance_spec(Release(manifest, "v1", "img")).env
    assert env["PLAT_ADAPTER"] == "lambda"
    assert env["PLAT_TIMEOUT"] == "90"
    assert env["PLAT_MEMORY_MB"] == "512"
    plain = instance_spec(Release(validate_manifest({"name": "a", "runtime": "python"}), "v", "i"))
    assert "PLAT_ADAPTER" not in plain.env  # detected by the shim
