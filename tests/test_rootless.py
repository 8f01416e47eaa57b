"""plat as a non-root user, with rootless Podman and Buildah, end to end.

``scripts/setup.sh test`` (as root) makes the user ``plat-rootless``: subuid and
subgid ranges, ``/dev/net/tun`` usable, ``/run/user/UID``, overlay storage, its own
virtualenv with this checkout installed, and the python base image in its own
image store. These tests run the real CLI as that user (``setpriv``, a clean
environment): ``plat doctor``, ``plat init``, ``plat deploy``, ``plat invoke``, a
call through the gateway, a secret, a cold start from the pool after scaling to
zero, and a ``plat dev`` reload. Without that user they fail with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import free_port, wait_for

pytestmark = pytest.mark.container

USER = "plat-rootless"
BASE = "localhost/plat/python-base:bookworm"
SETUP = "run `sudo bash scripts/setup.sh test` once (section (g) makes the user)"


@dataclass
class Rootless:
    """The CLI of one PLAT_HOME, run as the rootless user."""

    uid: int
    gid: int
    user_home: Path
    work: Path
    port: int

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def plat(self) -> str:
        return str(self.user_home / "venv" / "bin" / "plat")

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.user_home),
            "USER": USER,
            "LOGNAME": USER,
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": f"/run/user/{self.uid}",
            "PLAT_HOME": str(self.home),
            "PLAT_GATEWAY_PORT": str(self.port),
            "PLAT_POOL_SIZE": "1",
            "PLAT_SCALE_TO_ZERO_AFTER": "3s",
            "PLAT_AUTOSCALE_TICK": "250ms",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    def command(self, *args: str) -> list[str]:
        """``args`` as the user, in a clean environment (setpriv execs: signals reach
        the command itself)."""
        env = [f"{key}={value}" for key, value in self.env().items()]
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]
        return ["setpriv", *ids, "--", "env", "-i", *env, *args]

    def run(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args),
            cwd=self.work,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.plat, *args, **kwargs)

    def podman(self, *args: str) -> str:
        return self.run("podman", *args).stdout

    def containers(self, *filters: str) -> list[str]:
        """This daemon's containers in the user's own podman store."""
        ident = (self.home / "daemon-id").read_text().strip()
        cmd = ["ps", "-a", "--format", "{{.Names}}", "--filter", f"label=plat.daemon={ident}"]
        for item in filters:
            cmd += ["--filter", item]
        return [line for line in self.podman(*cmd).splitlines() if line.strip()]

    def get(self, path: str, timeout: float = 60) -> tuple[int, bytes]:
        password = (self.home / "credentials").read_text().strip().partition(":")[2]
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def write(self, path: Path, text: str) -> None:
        """Write a file the user owns (as the user edits its own function)."""
        path.write_text(textwrap.dedent(text))
        os.chown(path, self.uid, self.gid)


def _problems(user: pwd.struct_passwd) -> list[str]:
    """What the set-up should have done for ``user`` and did not."""
    problems = []
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines() if Path(table).exists() else []
        if not any(line.split(":")[0] in (user.pw_name, str(user.pw_uid)) for line in lines):
            problems.append(f"{USER} has no range in {table}")
    try:
        mode = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
    except OSError as exc:
        problems.append(f"/dev/net/tun: {exc}")
    else:
        if mode & 0o006 != 0o006:
            problems.append(f"/dev/net/tun is {mode:04o}: slirp4netns cannot publish ports")
    if not os.access(Path(user.pw_dir) / "venv" / "bin" / "plat", os.X_OK):
        problems.append(f"{user.pw_dir}/venv/bin/plat is missing")
    if not Path(f"/run/user/{user.pw_uid}").is_dir():
        problems.append(f"/run/user/{user.pw_uid} is missing")
    return problems


@pytest.fixture(scope="module")
def rootless() -> Iterator[Rootless]:
    if os.geteuid() != 0:
        pytest.fail(f"these tests switch to {USER} and must run as root (as CI does)")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is not installed")
    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        pytest.fail(f"there is no user {USER}: {SETUP}")
    problems = _problems(user)
    if problems:
        pytest.fail("; ".join(problems) + f": {SETUP}")
    work = Path(tempfile.mkdtemp(prefix="plat-rootless-", dir="/tmp"))
    os.chown(work, user.pw_uid, user.pw_gid)
    runner = Rootless(user.pw_uid, user.pw_gid, Path(user.pw_dir), work, free_port())
    if runner.run("podman", "image", "exists", BASE, check=False).returncode != 0:
        pytest.fail(f"{BASE} is not in {USER}'s own image store: {SETUP}")
    try:
        yield runner
    finally:
        runner.cli("daemon", "stop", check=False, timeout=120)
        leftovers = runner.containers() if (runner.home / "daemon-id").exists() else []
        if leftovers:
            runner.run("podman", "rm", "-f", *leftovers, check=False)
        shutil.rmtree(work, ignore_errors=True)
        assert not leftovers, f"the daemon left containers behind: {leftovers}"


def test_doctor_says_what_rootless_cannot_enforce(rootless: Rootless) -> None:
    proc = rootless.cli("doctor", "--json", check=False)
    data = json.loads(proc.stdout)
    checks = {check["name"]: check for check in data["checks"]}
    assert data["facts"]["is_root"] is False
    failing = [c for c in data["checks"] if c["ok"] is False]
    assert not failing and proc.returncode == 0, failing
    assert checks["rootless networking"]["ok"] is True
    assert checks["rootless ids"]["ok"] is True
    assert checks["rootless storage"]["detail"] == "overlay"
    # plat's own firewall rules need root: said, not failed.
    assert checks["rootless firewall"]["ok"] is None
    if data["facts"]["cgroup"] in ("v1", "hybrid"):  # this host: hybrid
        limits = checks["rootless limits"]
        assert limits["ok"] is None and "not enforced" in limits["detail"]


def test_init_deploy_invoke_and_a_call_through_the_gateway(rootless: Rootless) -> None:
    rootless.cli("init", "rl-hello", "--dir", str(rootless.work / "rl-hello"))
    out = rootless.cli("deploy", str(rootless.work / "rl-hello")).stdout
    assert "deployed rl-hello" in out, out
    answer = json.loads(rootless.cli("invoke", "rl-hello", "-d", '{"name": "Ada"}').stdout)
    assert answer["message"] == "Hello, Ada!"
    status, body = rootless.get("/function/rl-hello")
    assert status == 200 and json.loads(body)["message"] == "Hello, world!"

    # The daemon runs its own rootless podman service; the instance is in the
    # user's store, not root's, and its limits were asked for, not refused.
    daemon = rootless.cli("daemon", "status").stdout
    assert f"{rootless.home}/run/podman.sock (started by plat)" in daemon, daemon
    (name,) = rootless.containers("status=running", "label=plat.function=rl-hello")
    root_view = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}", "--filter", f"name={name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert name not in root_view
    inspected = json.loads(rootless.podman("inspect", name))[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"] == "10001:10001"

    # Many callers at once through rootlessport's published port.
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: rootless.get("/function/rl-hello"), range(64)))
    assert [status for status, _ in results] == [200] * 64


def test_bootstrap_as_the_user_finds_its_own_image(rootless: Rootless) -> None:
    """`plat runtime bootstrap` as the user looks in the user's store (where the
    set-up copied the image), so it is a no-op there; building it from nothing as
    the user works too (38 s measured, docs/host-setup.md), too slow for CI."""
    out = rootless.cli("runtime", "bootstrap", "python").stdout
    assert out.strip() == BASE, out


def test_a_secret_is_readable_by_the_instance(rootless: Rootless) -> None:
    rootless.cli("secret", "set", "rl-db", input="s3cret-rootless")
    folder = rootless.work / "rl-secret"
    folder.mkdir()
    os.chown(folder, rootless.uid, rootless.gid)
    rootless.write(
        folder / "plat.yaml", "name: rl-secret\nruntime: python\nhandler: handler.handle\n"
    )
    with (folder / "plat.yaml").open("a") as fh:
        fh.write("secrets: [rl-db]\n")
    rootless.write(
        folder / "handler.py",
        """
        def handle(event, context):
            return open("/var/plat/secrets/rl-db").read()
        """,
    )
    rootless.write(folder / "requirements.txt", "")
    rootless.cli("deploy", str(folder))
    status, body = rootless.get("/function/rl-secret")
    assert (status, body) == (200, b"s3cret-rootless")


def test_scale_to_zero_then_a_cold_start_from_the_pool(rootless: Rootless) -> None:
    folder = rootless.work / "rl-idle"
    rootless.cli("init", "rl-idle", "--dir", str(folder))
    with (folder / "plat.yaml").open("a") as fh:
        fh.write("scale: {min: 0, max: 1}\n")
    rootless.cli("deploy", str(folder))
    assert rootless.get("/function/rl-idle")[0] == 200

    def running() -> list[str]:
        return rootless.containers("status=running", "name=^plat-rl-idle-")

    assert wait_for(lambda: not running(), timeout=40)

    def pool_ready() -> bool:
        status = json.loads(rootless.cli("daemon", "status", "--json").stdout)
        pools = [p for p in status["pool"]["pools"] if p["key"].startswith("python/")]
        return bool(pools) and pools[0]["ready"] >= 1

    assert wait_for(pool_ready, timeout=90)
    status, body = rootless.get("/function/rl-idle")
    assert status == 200, body
    assert wait_for(lambda: len(running()) == 1, timeout=10)
    inspected = json.loads(rootless.podman("inspect", running()[0]))[0]
    # A pool instance, specialised with the function's code through the hard links
    # the daemon made in its own home.
    assert inspected["Config"]["Labels"]["plat.function"] == "pool-python"
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert mounts["/home/app"]["RW"] is False


def test_dev_reloads_on_save(rootless: Rootless) -> None:
    folder = rootless.work / "rl-dev"
    rootless.cli("init", "rl-dev", "--dir", str(folder))
    handler = """
        def handle(event, context):
            return "{text}"
        """
    rootless.write(folder / "handler.py", handler.format(text="before"))
    log = rootless.work / "dev.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            rootless.command(rootless.plat, "dev", str(folder)),
            cwd=rootless.work,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: "watching" in log.read_text(), timeout=120), log.read_text()
        assert rootless.get("/function/rl-dev") == (200, b"before")
        time.sleep(0.2)
        rootless.write(folder / "handler.py", handler.format(text="after"))
        assert wait_for(lambda: rootless.get("/function/rl-dev") == (200, b"after"), timeout=60), (
            log.read_text()
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "keeps serving" in log.read_text()
