"""The process backend through the CLI: chosen explicitly, or automatically (with a
warning) when no container engine can be reached; deploy, invoke and `plat dev`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures import PlatRunner, copy_example, wait_for
from tests.functions import write_python_function


def test_explicit_process_backend_serves_examples_and_reloads(
    fresh_plat: PlatRunner, tmp_path: Path
) -> None:
    plat = fresh_plat
    status = plat.run("daemon", "start", "--backend", "process").stdout
    assert "backend    process" in status
    folder = copy_example("hello-python", tmp_path)  # installs humanize with the host's pip
    plat.run("deploy", str(folder))
    assert "Hello, Ada!" in plat.run("invoke", "hello-python", "-d", '{"name": "Ada"}').stdout
    node = copy_example("hello-node", tmp_path)
    plat.run("deploy", str(node))
    assert "Grace" in plat.run("invoke", "hello-node", "-d", '{"name": "Grace"}').stdout
    # Instances are local processes bound to loopback; logs are captured the same way.
    lines = [json.loads(x) for x in plat.run("logs", "hello-python", "--json").stdout.splitlines()]
    assert any("serving hello-python" in str(x["line"]) for x in lines)
    # A dockerfile function needs containers, and says so.
    docker = copy_example("hello-dockerfile", tmp_path)
    refused = plat.run("deploy", str(docker), check=False)
    assert refused.returncode == 1
    assert "process backend cannot run" in refused.stderr

    fn = write_python_function(tmp_path, "quick", "def handle(e, c):\n    return 'p0'\n")
    log = tmp_path / "dev.log"
    with log.open("w") as fh:
        dev = subprocess.Popen(
            [sys.executable, "-m", "plat", "dev", str(fn), "--backend", "process"],
            env=plat.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: "watching" in log.read_text(), timeout=60), log.read_text()
        for i in range(1, 4):
            (fn / "handler.py").write_text(f"def handle(e, c):\n    return 'p{i}'\n")
            assert wait_for(
                lambda i=i: plat.http("GET", "/function/quick").body == f"p{i}".encode(),
                timeout=30,
            ), log.read_text()
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=20)
    # Asking for another backend than the running daemon's is a clear error.
    other = plat.run("dev", str(fn), "--backend", "container", check=False)
    assert other.returncode == 1
    assert "uses the process backend" in other.stderr


def test_no_engine_falls_back_to_processes_with_a_warning(
    fresh_plat: PlatRunner, tmp_path: Path
) -> None:
    plat = fresh_plat
    # A PATH without podman, and an engine endpoint that does not answer.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("node", "npm", "git"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    plat.env["PATH"] = str(bin_dir)
    plat.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    plat.env["XDG_RUNTIME_DIR"] = str(tmp_path)
    fn = write_python_function(tmp_path, "anywhere", "def handle(e, c):\n    return 'here'\n")
    proc = plat.run("deploy", str(fn))
    assert "warning" in proc.stderr
    assert "local processes" in proc.stderr
    assert "plat doctor" in proc.stderr
    assert plat.run("invoke", "anywhere").stdout == "here"
    status = json.loads(plat.run("daemon", "status", "--json").stdout)
    assert status["backend"] == "process"
    assert "no container engine" in status["backend_warning"]


def test_rm_deletes_the_prepared_folders(fresh_plat: PlatRunner, tmp_path: Path) -> None:
    plat = fresh_plat
    plat.run("daemon", "start", "--backend", "process")
    fn = write_python_function(tmp_path, "tidy", "def handle(e, c):\n    return 't1'\n")
    (fn / "blob.bin").write_bytes(b"\1" * (2 * 1024 * 1024))
    plat.run("deploy", str(fn))
    (fn / "handler.py").write_text("def handle(e, c):\n    return 't2'\n")
    plat.run("deploy", str(fn))
    artifacts = plat.home / "artifacts"
    assert (artifacts / "tidy").is_dir()
    assert [p.name for p in (artifacts / "_deps").iterdir()] == ["python-empty"]
    plat.run("rm", "tidy")
    assert not (artifacts / "tidy").exists()
    # The dependency folder only it used goes too; nothing else holds its files.
    assert list((artifacts / "_deps").iterdir()) == []
    assert not [p for p in plat.home.rglob("blob.bin")]


def test_links_leaving_the_folder_are_refused(fresh_plat: PlatRunner, tmp_path: Path) -> None:
    plat = fresh_plat
    plat.run("daemon", "start", "--backend", "process")
    (tmp_path / "secret.txt").write_text("top-secret")
    fn = write_python_function(
        tmp_path,
        "linky",
        "import pathlib\n\ndef handle(e, c):\n    return pathlib.Path('alias.txt').read_text()\n",
    )
    (fn / "real.txt").write_text("inside")
    (fn / "alias.txt").symlink_to("real.txt")
    (fn / "shadow").symlink_to("/etc/shadow")
    (fn / "up").symlink_to("../secret.txt")
    refused = plat.run("deploy", str(fn), check=False)
    assert refused.returncode == 1
    assert "shadow -> /etc/shadow (leaves the folder)" in refused.stderr
    assert "up -> ../secret.txt (leaves the folder" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not [p for p in plat.home.rglob("shadow")]
    (fn / "shadow").unlink()
    (fn / "up").unlink()
    plat.run("deploy", str(fn))
    assert plat.run("invoke", "linky").stdout == "inside"
