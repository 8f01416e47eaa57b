"""`plat dev` against a real daemon and Podman: reloads, broken saves, dependency changes,
and ten saves under steady load with zero failed requests."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container

HANDLER = """
def handle(event, context):
    return "{text}"
"""


@dataclass
class DevProcess:
    proc: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def dev(plat: PlatRunner, tmp_path: Path) -> Iterator[tuple[PlatRunner, Path, DevProcess]]:
    folder = write_python_function(
        tmp_path, f"dev{os.getpid() % 1000}x{time.time_ns() % 100000}", HANDLER.format(text="v0")
    )
    log = tmp_path / "dev.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plat", "dev", str(folder)],
            env=plat.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )
    dev = DevProcess(proc, log)
    try:
        assert wait_for(lambda: "watching" in dev.output(), timeout=120), dev.output()
        yield plat, folder, dev
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _name(folder: Path) -> str:
    return folder.name


def _body(plat: PlatRunner, name: str) -> str:
    return plat.http("GET", f"/function/{name}").body.decode()


def _save(folder: Path, text: str) -> None:
    (folder / "handler.py").write_text(HANDLER.format(text=text))


def test_reload_broken_save_recovery_and_ctrl_c(
    dev: tuple[PlatRunner, Path, DevProcess],
) -> None:
    plat, folder, proc = dev
    name = _name(folder)
    assert _body(plat, name) == "v0"
    _save(folder, "v1")
    assert wait_for(lambda: _body(plat, name) == "v1", timeout=30), proc.output()
    assert wait_for(lambda: "reload #1" in proc.output(), timeout=10)
    line = next(ln for ln in proc.output().splitlines() if "reload #1" in ln)
    for word in ("detect", "build", "start", "ready", "swap"):
        assert word in line

    # A syntax error: shown with the instance's log tail; v1 keeps answering.
    (folder / "handler.py").write_text("def handle(event, context)\n    return 'broken'\n")
    assert wait_for(lambda: "reload failed" in proc.output(), timeout=60), proc.output()
    assert "SyntaxError" in proc.output()
    assert "keeps serving" in proc.output()
    assert _body(plat, name) == "v1"

    # The next good save recovers.
    _save(folder, "v2")
    assert wait_for(lambda: _body(plat, name) == "v2", timeout=30), proc.output()

    # Ignored files trigger nothing.
    before = proc.output().count("changed:")
    (folder / "notes.swp").write_text("x")
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / "x.pyc").write_text("x")
    time.sleep(1.0)
    assert proc.output().count("changed:") == before

    # Ctrl-C leaves the last good version deployed, and says so.
    proc.proc.send_signal(signal.SIGINT)
    proc.proc.wait(timeout=20)
    assert "keeps serving" in proc.output().splitlines()[-1]
    assert _body(plat, name) == "v2"


def test_dependency_change_is_installed_without_a_build(
    dev: tuple[PlatRunner, Path, DevProcess],
) -> None:
    plat, folder, proc = dev
    name = _name(folder)
    (folder / "requirements.txt").write_text("humanize==4.17.0\n")
    (folder / "handler.py").write_text(
        "import humanize\n\ndef handle(event, context):\n    return humanize.intcomma(1234567)\n"
    )
    assert wait_for(lambda: _body(plat, name) == "1,234,567", timeout=240), proc.output()
    out = proc.output()
    reload = out[out.index("changed:") :]
    # Installed in a container of the function's image, and mounted: no build.
    shown = "build: install: the stack's install step, in a container of localhost/plat/"
    assert shown in reload, out
    assert "STEP" not in reload and "(hot)" in reload, out
    # The new dependency stays in its folder when its code changes again.
    (folder / "handler.py").write_text(
        "import humanize\n\ndef handle(event, context):\n    return humanize.intcomma(7654321)\n"
    )
    assert wait_for(lambda: _body(plat, name) == "7,654,321", timeout=60), proc.output()
    assert proc.output().count("build: install:") == 1, proc.output()


@dataclass
class Load:
    """Steady concurrent GETs on keep-alive connections; counts every outcome."""

    port: int
    path: str
    auth: str
    ok: int = 0
    bad: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def worker(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            try:
                conn.request("GET", self.path, headers={"Authorization": self.auth})
                resp = conn.getresponse()
                resp.read()
                if 200 <= resp.status < 300:
                    self.ok += 1
                else:
                    self.bad.append(f"HTTP {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.bad.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()


def test_ten_saves_under_load_fail_no_request(dev: tuple[PlatRunner, Path, DevProcess]) -> None:
    plat, folder, proc = dev
    name = _name(folder)
    auth = "Basic " + base64.b64encode(f"admin:{plat.password()}".encode()).decode()
    load = Load(plat.port, f"/function/{name}", auth)
    threads = [threading.Thread(target=load.worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 11):
            _save(folder, f"save-{i}")
            assert wait_for(lambda i=i: _body(plat, name) == f"save-{i}", timeout=60), proc.output()
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
    assert load.bad == []
    assert load.ok > 50
    assert proc.output().count("reload #") >= 10


def test_writes_that_change_no_content_never_reload(plat: PlatRunner, tmp_path: Path) -> None:
    """`plat dev > dev.out` inside the folder, a log file written, a file touched: no
    reload (each one used to reload, and the dev output fed itself forever)."""
    name = f"quiet{os.getpid() % 1000}x{time.time_ns() % 100000}"
    folder = write_python_function(
        tmp_path,
        name,
        "def handle(event, context):\n    print('handled', flush=True)\n    return 'q0'\n",
    )
    out = folder / "dev.out"  # not *.log: plat dev must know its own output
    with out.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plat", "dev", str(folder)],
            env=plat.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        assert wait_for(lambda: "watching" in out.read_text(), timeout=120), out.read_text()
        for i in range(15):
            assert _body(plat, name) == "q0"  # each call logs a line that dev prints into dev.out
            with (folder / "app.log").open("a") as log:
                log.write(f"line {i}\n")
            os.utime(folder / "handler.py")  # touched, same content
            (folder / "requirements.txt").write_text("")  # rewritten, same content
            time.sleep(0.3)
        time.sleep(2.0)
        text = out.read_text()
        assert "handled" in text  # the instance's log lines did reach dev.out
        assert "changed:" not in text, text
        assert "reload #" not in text, text
        # A real change still reloads, once.
        (folder / "handler.py").write_text("def handle(event, context):\n    return 'q1'\n")
        assert wait_for(lambda: _body(plat, name) == "q1", timeout=60), out.read_text()
        time.sleep(2.0)
        assert out.read_text().count("reload #") == 1, out.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
