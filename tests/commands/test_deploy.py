"""`plat deploy` / `plat invoke` / `plat rm` end to end: real daemon, Buildah, Podman."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, copy_example, wait_for
from tests.functions import ECHO, write_python_function

pytestmark = pytest.mark.container


@pytest.mark.parametrize(
    ("example", "name"),
    [
        ("hello-python", "hello-python"),
        ("hello-node", "hello-node"),
        ("hello-dockerfile", "hello-dockerfile"),
    ],
)
def test_examples_deploy_and_invoke(
    plat: PlatRunner, tmp_path: Path, example: str, name: str
) -> None:
    folder = copy_example(example, tmp_path)
    out = plat.run("deploy", str(folder)).stdout
    assert f"{plat.gateway}/function/{name}" in out
    assert "curl -u admin:$(plat auth password)" in out

    body = plat.run("invoke", name, "-d", '{"name": "Ada"}').stdout
    assert "Ada" in body
    default = plat.run("invoke", name, "-X", "POST", "-d", "{}").stdout
    assert "world" in default

    # Through the gateway over HTTP, with and without credentials.
    ok = plat.http("POST", f"/function/{name}", b'{"name": "Grace"}')
    assert ok.status == 200
    assert b"Grace" in ok.body
    denied = plat.http("POST", f"/function/{name}", b"{}", auth=False)
    assert denied.status == 401
    assert denied.json()["error"] == "unauthorized"  # type: ignore[index]
    assert denied.headers.get("WWW-Authenticate", "").startswith("Basic")


def test_invoke_passes_method_query_headers_path_and_exit_codes(
    plat: PlatRunner, tmp_path: Path
) -> None:
    folder = write_python_function(tmp_path, "echo", ECHO, extra_manifest="env: {GREETING: hi}\n")
    plat.run("deploy", str(folder))
    proc = plat.run(
        "invoke", "echo", "-X", "PUT", "-d", "payload", "-H", "X-Test: yes", "--path", "/a/b?q=1"
    )
    data = json.loads(proc.stdout)
    assert data["method"] == "PUT"
    assert data["path"] == "/a/b"
    assert data["query"] == {"q": "1"}
    assert data["body"] == "payload"
    assert data["x_test"] == "yes"
    assert data["greeting"] == "hi"
    # The gateway's credentials never reach the function.
    assert data["authorization"] is None

    head = plat.run("invoke", "echo", "-i").stdout
    assert head.startswith("HTTP/1.1 200")
    assert "content-type: application/json" in head.lower()

    missing = plat.run("invoke", "nope", check=False)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert "nope" in missing.stdout


def test_redeploy_unchanged_is_cached_and_code_change_reuses_dependency_layer(
    plat: PlatRunner, tmp_path: Path
) -> None:
    folder = copy_example("hello-python", tmp_path)
    # A name of its own, so an image left by an earlier run cannot be found.
    name = f"hello-{uuid.uuid4().hex[:8]}"
    manifest = folder / "plat.yaml"
    manifest.write_text(manifest.read_text().replace("name: hello-python", f"name: {name}"))
    first = plat.run("deploy", str(folder), "-v")
    assert "no changes since it was built" not in first.stderr
    again = plat.run("deploy", str(folder))
    assert "unchanged, reused" in again.stderr
    assert "already serving" not in again.stdout

    handler = folder / "handler.py"
    handler.write_text(handler.read_text().replace("Hello", "Howdy"))
    changed = plat.run("deploy", str(folder), "-v")
    log = changed.stderr
    # Everything below the code is the function's stack image, found as it is: the
    # dependencies are not installed again; only the code is built anew, one step.
    assert "pip install" not in log and "is up to date" in log, log
    steps = [ln.split("STEP ", 1)[1] for ln in log.splitlines() if "STEP " in ln]
    assert steps[0].startswith("1/5: FROM localhost/plat/stack-python:"), log
    stack = steps[0].split("FROM ", 1)[1].strip()
    assert steps[1].endswith("COPY app/ /home/app/"), log
    assert steps[2].endswith("USER 10001:10001"), log
    assert steps[3].endswith(f'LABEL "plat.function"="{name}"'), log  # one commit: no layers
    assert steps[4].endswith(f'LABEL "plat.stack"="{stack}"'), log
    assert "--layers=false" in log
    assert "Howdy" in plat.run("invoke", name, "-d", '{"name": "Ada"}').stdout
    describe = json.loads(plat.run("describe", name, "--json").stdout)
    assert len([v for v in describe["versions"] if v["status"] == "built"]) >= 2
    labels = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Labels}}", describe["image"]],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert labels["plat.function"] == name


def _images_of(name: str) -> list[str]:
    out = subprocess.run(
        ["podman", "images", "--filter", f"label=plat.function={name}", "--format", "{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split())


def test_a_function_keeps_three_images_and_rm_removes_them(
    plat: PlatRunner, tmp_path: Path
) -> None:
    name = f"kept-{uuid.uuid4().hex[:6]}"
    versions = []
    for n in range(5):
        folder = write_python_function(
            tmp_path / str(n), name, f"def handle(e, c):\n    return {n}\n"
        )
        plat.run("deploy", str(folder))
        versions.append(json.loads(plat.run("describe", name, "--json").stdout)["version"])
        assert plat.run("invoke", name).stdout.strip() == str(n)
    # The prune runs after each build, off the deploy's path.
    assert wait_for(lambda: _images_of(name) == sorted(versions[2:]), timeout=30), (
        _images_of(name),
        versions,
    )
    # No network anchor holds one of them (an anchor runs its network's first
    # function's stack, which plat keeps).
    anchors = subprocess.run(
        ["podman", "ps", "-a", "--filter", "label=plat.anchor", "--format", "{{.Image}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"localhost/plat/{name}:" not in anchors
    # The previous version is still an image: deploying it again builds nothing.
    again = plat.run("deploy", str(tmp_path / "3" / name), "-v")
    assert "no changes since it was built" in again.stderr
    plat.run("rm", name)
    assert _images_of(name) == []


def test_failing_build_exits_1_with_step_and_tail(plat: PlatRunner, tmp_path: Path) -> None:
    folder = write_python_function(
        tmp_path,
        "badreq",
        "def handle(event, context):\n    return 'x'\n",
        requirements="this-package-does-not-exist-plat==0.0.1\n",
    )
    proc = plat.run("deploy", str(folder), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "STEP" in proc.stderr
    assert "build log" in proc.stderr
    assert "this-package-does-not-exist-plat" in proc.stderr


def test_import_error_never_becomes_ready_and_old_version_keeps_serving(
    plat: PlatRunner, tmp_path: Path
) -> None:
    folder = write_python_function(tmp_path, "keeper", "def handle(e, c):\n    return 'v1'\n")
    plat.run("deploy", str(folder))
    (folder / "handler.py").write_text("def handle(e, c):\n    return 'v2'\nsyntax error here\n")
    proc = plat.run("deploy", str(folder), check=False)
    assert proc.returncode == 1
    assert "did not become ready" in proc.stderr
    assert "SyntaxError" in proc.stderr
    assert plat.run("invoke", "keeper").stdout.strip() == "v1"


def test_rm_removes_instances_and_metadata(plat: PlatRunner, tmp_path: Path) -> None:
    folder = write_python_function(tmp_path, "gone", "def handle(e, c):\n    return 'hi'\n")
    plat.run("deploy", str(folder))
    assert plat.containers("label=plat.function=gone")
    plat.run("rm", "gone")
    assert plat.containers("label=plat.function=gone") == []
    names = [f["name"] for f in json.loads(plat.run("ls", "--json").stdout)]
    assert "gone" not in names
    assert plat.http("GET", "/function/gone").status == 404
    again = plat.run("rm", "gone", check=False)
    assert again.returncode == 1
    assert "no function named 'gone'" in again.stderr


def stored_for(home: Path, name: str) -> list[str]:
    """Paths under the home that belong to function ``name`` (by their names)."""
    found = []
    for path in home.rglob("*"):
        rel = path.relative_to(home)
        if any(
            part == name or part.startswith(f"{name}-") or f"_{name}_" in part for part in rel.parts
        ):
            found.append(rel.as_posix())
    return sorted(found)


def test_rm_deletes_what_plat_stored_for_the_function(plat: PlatRunner, tmp_path: Path) -> None:
    name = f"cleaned-{uuid.uuid4().hex[:6]}"
    folder = write_python_function(tmp_path, name, "def handle(e, c):\n    return 'v1'\n")
    (folder / "blob.bin").write_bytes(b"\1" * (2 * 1024 * 1024))
    plat.run("deploy", str(folder))
    # A `plat dev` reload too: its code snapshot lives under the home.
    out = tmp_path / "dev.txt"
    with out.open("w") as fh:
        dev = subprocess.Popen(
            [sys.executable, "-m", "plat", "dev", str(folder)],
            env=plat.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: "watching" in out.read_text(), timeout=120), out.read_text()
        (folder / "handler.py").write_text("def handle(e, c):\n    return 'v2'\n")
        assert wait_for(lambda: plat.run("invoke", name).stdout == "v2", timeout=60)
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=20)
    assert stored_for(plat.home, name), "the deploys stored nothing to clean up?"
    plat.run("rm", name)
    assert wait_for(lambda: stored_for(plat.home, name) == [], timeout=30), stored_for(
        plat.home, name
    )


def test_links_leaving_the_folder_are_refused_and_links_inside_work(
    plat: PlatRunner, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("top-secret")
    folder = write_python_function(
        tmp_path,
        "linked",
        "import pathlib\n\ndef handle(e, c):\n"
        "    return pathlib.Path('alias.txt').read_text() + pathlib.Path('data/v').read_text()\n",
    )
    (folder / "lib").mkdir()
    (folder / "lib" / "v").write_text("!")
    (folder / "real.txt").write_text("inside")
    (folder / "alias.txt").symlink_to("real.txt")
    (folder / "data").symlink_to("lib", target_is_directory=True)
    (folder / "shadow").symlink_to("/etc/shadow")
    (folder / "notes.txt").symlink_to(tmp_path / "secret.txt")
    refused = plat.run("deploy", str(folder), check=False)
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr and "unexpected" not in refused.stderr
    assert "shadow -> /etc/shadow (leaves the folder)" in refused.stderr
    assert f"notes.txt -> {tmp_path / 'secret.txt'} (leaves the folder)" in refused.stderr
    assert "hint:" in refused.stderr and "readlink -f" in refused.stderr
    assert "linked" not in [f["name"] for f in json.loads(plat.run("ls", "--json").stdout)]
    (folder / "shadow").unlink()
    (folder / "notes.txt").unlink()
    plat.run("deploy", str(folder))
    assert plat.run("invoke", "linked").stdout == "inside!"
    plat.run("rm", "linked")


def test_the_daemon_refuses_links_out_even_when_the_cli_does_not_check(
    plat: PlatRunner, tmp_path: Path
) -> None:
    """A client that skips the check (here: the control API called directly)."""
    (tmp_path / "secret.txt").write_text("top-secret")
    folder = write_python_function(tmp_path, "sneaky", "def handle(e, c):\n    return 'x'\n")
    (folder / "notes.txt").symlink_to(tmp_path / "secret.txt")
    code = (
        "import json, sys\n"
        "from plat.connect import connect\n"
        "events = list(connect().stream('POST', '/v1/functions', {'path': sys.argv[1]}))\n"
        "print(json.dumps(events))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        env=plat.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    events = json.loads(proc.stdout)
    errors = [e for e in events if e.get("type") == "error"]
    assert errors and errors[0]["error"] == "unsafe_folder", events
    assert "notes.txt -> " in errors[0]["message"]
    assert not any(e.get("type") == "built" for e in events)
    assert not [p for p in plat.home.rglob("notes.txt")]
