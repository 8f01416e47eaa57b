"""`plat push` end to end: a daemon in real containers (Podman, Buildah) pushes a
function's image to a real registry on loopback (Debian's docker-registry); the
registry lists the tag and serves the printed digest. Then the journey on: `plat
k8s render` and `plat deploy --target k8s` use what was pushed. Failures (plain
HTTP, unreachable, credentials, unknown function, malformed requests), concurrent
pushes, a remote caller, and a push whose client goes away midway."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from plat.client import DaemonClient
from plat.errors import PlatError
from plat.paths import Home
from tests.commands.remote import remote
from tests.fixtures import (
    PlatRunner,
    copy_example,
    daemon_session,
    free_port,
    make_runner,
    wait_for,
)
from tests.k8s.servers import kube_apiserver, registry, registry_get

pytestmark = pytest.mark.container

REF_RE = re.compile(r"^(?P<repo>[^\s@]+):(?P<tag>[0-9a-f]{12})@(?P<digest>sha256:[0-9a-f]{64})$")


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    """A daemon with two functions deployed: `pushed` and `other`."""
    tmp = tmp_path_factory.mktemp("push")
    with daemon_session(make_runner(tmp)) as runner:
        for name in ("pushed", "other"):
            folder = copy_example("hello-python", tmp / name)
            manifest = folder / "plat.yaml"
            manifest.write_text(manifest.read_text().replace("name: hello-python", f"name: {name}"))
            runner.run("deploy", str(folder))
        yield runner


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def push(
    plat: PlatRunner, name: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return plat.run("push", name, *args, check=check, timeout=180)


def test_push_puts_the_image_in_the_registry_by_digest(plat: PlatRunner, reg: str) -> None:
    proc = push(plat, "pushed", "--registry", reg, "--no-tls-verify")
    reference = proc.stdout.strip()
    match = REF_RE.match(reference)
    assert match, proc.stdout
    assert match["repo"] == f"{reg}/pushed"
    version = json.loads(plat.run("describe", "pushed", "--json").stdout)["version"]
    assert match["tag"] == version
    assert f"pushed pushed version {version}" in proc.stderr

    status, _, body = registry_get(reg, "/v2/pushed/tags/list")
    assert status == 200 and version in json.loads(body)["tags"]
    status, headers, _ = registry_get(reg, f"/v2/pushed/manifests/{version}")
    assert status == 200
    assert headers["Docker-Content-Digest"] == match["digest"]
    # By digest too, and the record shows in `plat describe`.
    assert registry_get(reg, f"/v2/pushed/manifests/{match['digest']}")[0] == 200
    assert f"pushed     {reference}" in plat.run("describe", "pushed").stdout


def test_a_prefix_and_a_second_push_of_the_same_version(plat: PlatRunner, reg: str) -> None:
    first = push(plat, "pushed", "--registry", f"{reg}/team/apps", "--no-tls-verify").stdout
    again = push(plat, "pushed", "--registry", f"{reg}/team/apps", "--no-tls-verify").stdout
    assert first == again
    assert first.startswith(f"{reg}/team/apps/pushed:")
    assert registry_get(reg, "/v2/team/apps/pushed/tags/list")[0] == 200


def test_render_and_deploy_to_a_cluster_use_the_pushed_image(
    plat: PlatRunner, reg: str, tmp_path: Path
) -> None:
    reference = push(plat, "pushed", "--registry", reg, "--no-tls-verify").stdout.strip()
    # From a folder that is not the function's: the deployed manifest is used.
    elsewhere = replace(plat, env={**plat.env})
    proc = subprocess.run(
        [sys.executable, "-m", "plat", "k8s", "render", "pushed"],
        env=elsewhere.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == reference
    assert "rendered from the deployed pushed" in proc.stderr

    with kube_apiserver(tmp_path / "kube") as server:
        cluster = replace(plat, env=server.env(plat.env))
        folder = copy_example("hello-python", tmp_path / "src")
        manifest = folder / "plat.yaml"
        manifest.write_text(manifest.read_text().replace("name: hello-python", "name: pushed"))
        proc = cluster.run("deploy", str(folder), "--target", "k8s", "--no-wait")
        assert f"image {reference}" in proc.stderr
        assert "applied pushed to default" in proc.stdout
        assert (
            "removed pushed from default" in cluster.run("rm", "pushed", "--target", "k8s").stdout
        )
    # The local function is untouched by all of this.
    assert json.loads(plat.run("describe", "pushed", "--json").stdout)["name"] == "pushed"


def test_render_without_a_push_says_how(plat: PlatRunner, tmp_path: Path) -> None:
    proc = plat.run("k8s", "render", "other", check=False)
    assert proc.returncode == 1
    assert "other has not been pushed to a registry" in proc.stderr
    assert "plat push other --registry" in proc.stderr
    # A folder whose function was never deployed here: nothing was pushed either.
    folder = copy_example("hello-node", tmp_path)
    proc = plat.run("k8s", "render", "hello-node", "--path", str(folder), check=False)
    assert proc.returncode == 1
    assert "hello-node is not deployed here" in proc.stderr and "--image" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "speaks plain HTTP, not HTTPS"),  # TLS verification on, against plain HTTP
        (["--no-tls-verify", "--registry", "127.0.0.1:{closed}"], "cannot be reached"),
        (["--registry", "http://x"], "has a scheme"),
        (["--registry", "UPPER:5000/Case"], "is not HOST[:PORT][/prefix]"),
        (["--no-tls-verify", "--authfile", "/nonexistent.json"], "is not a readable file"),
    ],
)
def test_failures_are_clear(plat: PlatRunner, reg: str, args: list[str], message: str) -> None:
    args = [a.replace("{closed}", str(free_port())) for a in args]
    if "--registry" not in args:
        args = ["--registry", reg, *args]
    started = time.monotonic()
    proc = push(plat, "pushed", *args, check=False)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert time.monotonic() - started < 60


def test_an_unknown_function(plat: PlatRunner, reg: str) -> None:
    proc = push(plat, "nope", "--registry", reg, check=False)
    assert proc.returncode == 1 and "no function named 'nope'" in proc.stderr


def test_credentials_from_an_authfile(plat: PlatRunner, tmp_path: Path) -> None:
    with registry(tmp_path / "auth-registry", users={"ada": "lovelace"}) as address:
        proc = push(plat, "pushed", "--registry", address, "--no-tls-verify", check=False)
        assert proc.returncode == 1
        assert f"registry {address} refused the push" in proc.stderr
        assert f"podman login {address}" in proc.stderr
        authfile = tmp_path / "auth.json"
        token = base64.b64encode(b"ada:lovelace").decode()
        authfile.write_text(json.dumps({"auths": {address: {"auth": token}}}))
        ok = push(
            plat, "pushed", "--registry", address, "--no-tls-verify", "--authfile", str(authfile)
        )
        assert REF_RE.match(ok.stdout.strip())
        basic = "Basic " + token
        assert registry_get(address, "/v2/pushed/tags/list", auth=basic)[0] == 200


def test_concurrent_pushes_all_land_with_one_digest(plat: PlatRunner, reg: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        procs = list(
            pool.map(
                lambda _: push(plat, "other", "--registry", reg, "--no-tls-verify", check=False),
                range(3),
            )
        )
    assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr for p in procs]
    assert len({p.stdout for p in procs}) == 1


def test_a_remote_caller_pushes_through_the_same_route(
    plat: PlatRunner, reg: str, tmp_path: Path
) -> None:
    token = plat.run("auth", "token").stdout.strip()
    far = remote(plat, token)
    proc = push(far, "pushed", "--registry", reg, "--no-tls-verify")
    assert REF_RE.match(proc.stdout.strip())
    authfile = tmp_path / "auth.json"
    authfile.write_text("{}")
    refused = push(far, "pushed", "--registry", reg, "--authfile", str(authfile), check=False)
    assert refused.returncode == 1 and "the daemon is at PLAT_URL" in refused.stderr


def test_a_push_whose_client_leaves_runs_to_its_end(plat: PlatRunner, tmp_path: Path) -> None:
    with registry(tmp_path / "fresh") as address:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plat",
                "push",
                "pushed",
                "--registry",
                address,
                "--no-tls-verify",
            ],
            env=plat.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Midway: the registry has begun receiving the image's layers.
        repo = tmp_path / "fresh" / "data" / "docker" / "registry" / "v2" / "repositories"
        assert wait_for(lambda: (repo / "pushed").exists(), 120)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        # The daemon carries on: the push is recorded and the registry has it.
        assert wait_for(
            lambda: f"pushed     {address}/pushed:" in plat.run("describe", "pushed").stdout, 120
        )
        assert registry_get(address, "/v2/pushed/tags/list")[0] == 200
        assert plat.run("ls").returncode == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "push needs 'registry'"),
        ({"registry": 5}, "push needs 'registry'"),
        ({"registry": "r" * 10_000}, "longer than 255"),
        ({"registry": "localhost:5000", "tls_verify": "no"}, "tls_verify must be true or false"),
        ({"registry": "localhost:5000", "authfile": "relative.json"}, "must be an absolute path"),
        ({"registry": "localhost:5000", "authfile": 7}, "authfile must be a path"),
    ],
)
def test_malformed_requests_are_refused(
    plat: PlatRunner, body: dict[str, object], message: str
) -> None:
    client = DaemonClient(Home(plat.home))
    with pytest.raises(PlatError, match=re.escape(message)):
        list(client.stream("POST", "/v1/functions/pushed/push", body))
    assert client.ping()


def test_a_daemon_without_images_says_so(tmp_path: Path) -> None:
    """On the process backend there is no image to push: the error names that, not
    a missing Buildah."""
    from tests.commands.remote import process_daemon

    with process_daemon(tmp_path / "p") as plat:
        folder = copy_example("hello-python", tmp_path)
        plat.run("deploy", str(folder))
        out = plat.run("push", "hello-python", "--registry", "localhost:5000", check=False)
    assert out.returncode == 1
    assert "runs functions as local processes" in out.stderr, out.stderr
    assert "--backend container" in out.stderr
