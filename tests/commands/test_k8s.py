"""`plat k8s render` from a folder, as in a GitOps pipeline: no daemon, no cluster;
the YAML on stdout, what it was made from on stderr. (From the deployed function and
its push: tests/commands/test_push.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures import PlatRunner, copy_example, make_runner

IMAGE = "registry.example.com/hello-python:v1@sha256:" + "a" * 64


@pytest.fixture
def cli(tmp_path: Path) -> PlatRunner:
    return make_runner(tmp_path)


def render(
    cli: PlatRunner, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plat", "k8s", "render", *args],
        env=cli.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_render_from_the_current_folder_needs_no_daemon(cli: PlatRunner, tmp_path: Path) -> None:
    folder = copy_example("hello-python", tmp_path)
    proc = render(cli, "hello-python", "--image", IMAGE, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert docs[0]["metadata"]["labels"]["plat.version"] == "v1"
    assert proc.stdout.startswith("# hello-python: rendered by `plat k8s render`")
    assert f"rendered from {folder / 'plat.yaml'}" in proc.stderr
    assert not (cli.home / "run").exists()


def test_render_knative_into_a_namespace_from_a_path(cli: PlatRunner, tmp_path: Path) -> None:
    folder = copy_example("hello-python", tmp_path)
    proc = render(
        cli, "hello-python", "--knative", "-n", "team", "--image", IMAGE, "--path", str(folder)
    )
    assert proc.returncode == 0, proc.stderr
    (ksvc,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert ksvc["apiVersion"] == "serving.knative.dev/v1"
    assert ksvc["metadata"]["namespace"] == "team"


def test_a_tenant_renders_its_namespace(cli: PlatRunner, tmp_path: Path) -> None:
    folder = copy_example("hello-python", tmp_path)
    cli.env["PLAT_TENANT"] = "acme"
    proc = render(cli, "hello-python", "--image", IMAGE, cwd=folder)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "acme"
    assert {d["metadata"].get("namespace") for d in docs[1:]} == {"acme"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["other", "--path", "{folder}"], "is the manifest of hello-python, not other"),
        (["hello-python", "--path", "{folder}", "-n", "Bad_Space"], "is not a namespace name"),
        (["hello-python", "--path", "{folder}", "--image", "a b"], "is not an image reference"),
        (["hello-python", "--path", "{missing}"], "is not a folder"),
    ],
)
def test_bad_input_is_a_clear_error(
    cli: PlatRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    folder = copy_example("hello-python", tmp_path)
    args = [a.format(folder=folder, missing=tmp_path / "missing") for a in args]
    if "--image" not in args:
        args += ["--image", IMAGE]
    proc = render(cli, *args)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_a_broken_plat_yaml_is_named(cli: PlatRunner, tmp_path: Path) -> None:
    folder = copy_example("hello-python", tmp_path)
    (folder / "plat.yaml").write_text(
        "name: hello-python\nruntime: python\nscale: {min: 9, max: 2}\n"
    )
    proc = render(cli, "hello-python", "--path", str(folder), "--image", IMAGE)
    assert proc.returncode == 1
    assert "plat.yaml: invalid value for 'scale'" in proc.stderr
