"""plat.daemon.drivers.process.backend: real shim subprocesses on loopback, no containers."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from plat.daemon.drivers.base import InstanceSpec, OutputLine, RunningInstance
from plat.daemon.drivers.process.artifacts import prepare_artifact
from plat.daemon.drivers.process.backend import (
    BACKLOG_LINES,
    MAX_LINE_BYTES,
    ProcessBackend,
    _Instance,
)
from plat.daemon.drivers.process.environment import instance_environment
from plat.daemon.serving.probe import PROBE_HEADER, wait_ready
from plat.errors import ConflictError, PlatError
from plat.manifest import Manifest

REPO = Path(__file__).resolve().parents[4]
NODE = pytest.mark.skipif(
    ProcessBackend("x").node is None, reason="node is not installed on this host"
)

PY_HANDLER = """\
import importlib.util, os

def handle(event, context):
    print(f"handler saw {event.method} {event.path}", flush=True)
    return {
        "body": event.body.decode(),
        "function": os.environ.get("PLAT_FUNCTION"),
        "version": os.environ.get("PLAT_VERSION"),
        "greeting": os.environ.get("GREETING"),
        "secret": os.environ.get("PLAT_TEST_SECRET"),
        "cwd": os.getcwd(),
        # Installed for the daemon, not a requirement of this function.
        "sees_daemon_packages": importlib.util.find_spec("yaml") is not None,
    }
"""

NODE_HANDLER = """\
module.exports = async (event) => {
  console.log(`node handler saw ${event.method} ${event.path}`);
  return {
    body: event.body.toString(),
    function: process.env.PLAT_FUNCTION,
    greeting: process.env.GREETING,
    secret: process.env.PLAT_TEST_SECRET || null,
    nodePath: process.env.NODE_PATH,
  };
};
"""

# SIGTERM stays pending forever: blocked in the main thread before the shim
# installs its handler, and inherited by every thread the shim starts later.
STUBBORN_HANDLER = """\
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

def handle(event, context):
    return "still here"
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


async def artifact(tmp_path: Path, runtime: str, files: dict[str, str], name: str = "fn") -> str:
    """Prepare ``files`` as function ``name``; returns the image reference."""
    source = write(tmp_path / f"src-{name}-{runtime}", files)
    _, ref, _ = await prepare_artifact(
        Manifest(name=name, runtime=runtime), source, tmp_path / "work", os.environ, lambda _: None
    )
    return ref


def spec(image: str, handler: str, name: str = "fn", **env: str) -> InstanceSpec:
    return InstanceSpec(
        function=name, version="v1", image=image, env={"PLAT_HANDLER": handler, **env}
    )


@pytest.fixture
async def backend() -> AsyncIterator[ProcessBackend]:
    b = ProcessBackend("test-daemon")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def ready(
    backend: ProcessBackend, session: aiohttp.ClientSession, inst: RunningInstance
) -> None:
    await wait_ready(
        session, inst.host, inst.port, timeout=20, alive=lambda: backend.is_alive(inst)
    )


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def logs_with(backend: ProcessBackend, inst: RunningInstance, text: str) -> str:
    """The instance's log once ``text`` is in it (the pipe is read concurrently)."""
    for _ in range(500):
        logs = await backend.logs(inst, tail=BACKLOG_LINES)
        if text in logs:
            return logs
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} never showed up in the log:\n{logs}")


async def collect(backend: ProcessBackend, inst: RunningInstance) -> list[OutputLine]:
    return [line async for line in backend.output(inst)]


async def test_python_instance_end_to_end(
    tmp_path: Path,
    backend: ProcessBackend,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLAT_TEST_SECRET", "daemon-only")
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    inst = await backend.start(spec(image, "handler.handle", GREETING="hi"), "i-py")
    assert (inst.host, inst.id, inst.function, inst.version) == ("127.0.0.1", "i-py", "fn", "v1")
    pid = int(inst.backend_ref)
    await ready(backend, session, inst)

    async with session.get(f"http://{inst.address}/", headers={PROBE_HEADER: "1"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ready"}
    async with session.post(f"http://{inst.address}/some/path", data=b"ping") as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["body"] == "ping"
    assert (answer["function"], answer["version"], answer["greeting"]) == ("fn", "v1", "hi")
    assert answer["secret"] is None  # the daemon's environment does not leak in
    assert answer["sees_daemon_packages"] is False
    assert answer["cwd"] == str(Path(image.removeprefix("process:")) / "app")

    await backend.stop(inst, timeout=5)
    assert not await backend.is_alive(inst)
    assert pid_gone(pid)
    assert port_closed(inst.port)

    # Read after the fact: every line from the first one is still there.
    lines = await collect(backend, inst)
    texts = [line.text for line in lines]
    assert texts[0].startswith("plat-shim: python ")
    assert f"on http://127.0.0.1:{inst.port}" in texts[0]
    assert "handler saw POST /some/path" in texts
    assert {line.stream for line in lines} <= {"stdout", "stderr"}
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(lines))
    await backend.stop(inst)  # idempotent


@NODE
async def test_node_instance_end_to_end(
    tmp_path: Path,
    backend: ProcessBackend,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLAT_TEST_SECRET", "daemon-only")
    image = await artifact(
        tmp_path, "node", {"handler.js": NODE_HANDLER, "package.json": '{"dependencies": {}}'}
    )
    inst = await backend.start(spec(image, "handler.js", GREETING="hey"), "i-node")
    reader = asyncio.create_task(collect(backend, inst))  # follows live from the start
    await ready(backend, session, inst)
    async with session.get(f"http://{inst.address}/", headers={PROBE_HEADER: "1"}) as resp:
        assert resp.status == 200
    async with session.put(f"http://{inst.address}/x", data=b"pong") as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["body"] == "pong"
    assert (answer["function"], answer["greeting"], answer["secret"]) == ("fn", "hey", None)
    assert answer["nodePath"].endswith("/deps/node_modules")

    await backend.stop(inst)
    assert pid_gone(int(inst.backend_ref)) and port_closed(inst.port)
    texts = [line.text for line in await asyncio.wait_for(reader, 10)]
    assert texts[0].startswith("plat-shim: node ")
    assert "node handler saw PUT /x" in texts


async def test_sigterm_is_graceful(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    inst = await backend.start(spec(image, "handler.handle"), "i-1")
    await ready(backend, session, inst)
    started = time.monotonic()
    await backend.stop(inst, timeout=10)
    assert time.monotonic() - started < 5
    assert backend._instances["i-1"].proc.returncode == 0  # the shim drained and exited


async def test_stop_escalates_to_sigkill(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": STUBBORN_HANDLER})
    inst = await backend.start(spec(image, "handler.handle"), "i-stubborn")
    await ready(backend, session, inst)
    started = time.monotonic()
    await backend.stop(inst, timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5
    assert backend._instances["i-stubborn"].proc.returncode == -signal.SIGKILL
    assert pid_gone(int(inst.backend_ref)) and port_closed(inst.port)


async def test_stop_kills_what_the_handler_spawned(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    handler = textwrap.dedent(
        """\
        import subprocess
        child = subprocess.Popen(["sleep", "60"])
        print(f"child {child.pid}", flush=True)

        def handle(event, context):
            return "ok"
        """
    )
    image = await artifact(tmp_path, "python", {"handler.py": handler})
    inst = await backend.start(spec(image, "handler.handle"), "i-parent")
    await ready(backend, session, inst)
    lines = await logs_with(backend, inst, "child ")
    child = int(next(t for t in lines.splitlines() if t.startswith("child ")).split()[1])
    assert not pid_gone(child)
    await backend.stop(inst)
    for _ in range(100):
        if pid_gone(child):
            break
        await asyncio.sleep(0.02)
    assert pid_gone(child)


async def test_list_is_alive_logs_remove(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    a = await backend.start(spec(image, "handler.handle"), "a")
    b = await backend.start(spec(image, "handler.handle"), "b")
    assert a.port != b.port
    with pytest.raises(ConflictError):
        await backend.start(spec(image, "handler.handle"), "a")
    await ready(backend, session, a)
    await ready(backend, session, b)
    listed = {i.id: i for i in await backend.list()}
    assert set(listed) == {"a", "b"} and all(i.running for i in listed.values())
    assert listed["a"].port == a.port and listed["a"].backend_ref == a.backend_ref

    async with session.get(f"http://{a.address}/tail") as resp:
        assert resp.status == 200
    logs = await logs_with(backend, a, "handler saw GET /tail")
    assert "plat-shim: python" in logs
    assert (await backend.logs(a, tail=1)).splitlines() == ["handler saw GET /tail"]
    assert await backend.logs(a, tail=0) == ""

    await backend.stop(a)
    assert not await backend.is_alive(a) and await backend.is_alive(b)
    states = {i.id: i.running for i in await backend.list()}
    assert states == {"a": False, "b": True}
    await backend.remove(a)
    await backend.remove(a)  # idempotent
    assert [i.id for i in await backend.list()] == ["b"]
    assert await backend.logs(a) == "" and await collect(backend, a) == []

    await backend.remove(b)  # a running instance is killed first
    assert pid_gone(int(b.backend_ref)) and await backend.list() == []


async def test_close_stops_everything(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    backend = ProcessBackend("test-daemon")
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    started = [await backend.start(spec(image, "handler.handle"), f"i{n}") for n in range(3)]
    for inst in started:
        await ready(backend, session, inst)
    await backend.close()
    assert await backend.list() == []
    for inst in started:
        assert pid_gone(int(inst.backend_ref)) and port_closed(inst.port)


async def test_a_handler_that_fails_to_load_exits_and_its_output_ends(
    tmp_path: Path, backend: ProcessBackend
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": "raise RuntimeError('boom')\n"})
    inst = await backend.start(spec(image, "handler.handle"), "broken")
    lines = await asyncio.wait_for(collect(backend, inst), 20)
    assert any("RuntimeError: boom" in line.text for line in lines)
    assert all(line.stream == "stderr" for line in lines if "boom" in line.text)
    assert not await backend.is_alive(inst)
    assert "cannot load the handler" in await backend.logs(inst)


async def test_output_since_skips_older_lines(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    inst = await backend.start(spec(image, "handler.handle"), "i-since")
    await ready(backend, session, inst)
    cut = time.time()
    async with session.get(f"http://{inst.address}/later") as resp:
        assert resp.status == 200
    await backend.stop(inst)
    texts = [line.text async for line in backend.output(inst, since=cut)]
    assert texts[0] == "handler saw GET /later"
    assert not any(text.startswith("plat-shim: python") for text in texts)


async def test_unknown_and_foreign_artifacts(tmp_path: Path, backend: ProcessBackend) -> None:
    with pytest.raises(PlatError, match="not a process artifact"):
        await backend.start(spec("localhost/plat/fn:abc", "handler.handle"), "x")
    with pytest.raises(PlatError, match="not a prepared function folder"):
        await backend.start(spec(f"process:{tmp_path / 'gone'}", "handler.handle"), "y")
    ghost = RunningInstance("ghost", "fn", "v1", "127.0.0.1", 1, "0")
    await backend.stop(ghost)
    await backend.remove(ghost)
    assert not await backend.is_alive(ghost)
    assert await backend.logs(ghost) == ""


async def test_node_missing_is_a_clear_error(tmp_path: Path) -> None:
    image = await artifact(tmp_path, "node", {"handler.js": NODE_HANDLER})
    backend = ProcessBackend("test-daemon", node=None)
    with pytest.raises(PlatError, match="node is not installed"):
        await backend.start(spec(image, "handler.js"), "n")
    assert await backend.list() == []


def test_environment_is_minimal_and_complete(tmp_path: Path) -> None:
    host = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "SSL_CERT_FILE": "/etc/ca.pem",
        "AWS_SECRET_ACCESS_KEY": "nope",
        "PLAT_HOME": "/home/u/.plat",
        "PYTHONPATH": "/daemon/site",
    }
    s = InstanceSpec(
        "fn", "v9", f"process:{tmp_path}", env={"PLAT_HANDLER": "h.handle", "PORT": "1"}
    )
    env = instance_environment(s, tmp_path, "python", 4321, host)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "SSL_CERT_FILE": "/etc/ca.pem",
        "PLAT_HANDLER": "h.handle",
        "PYTHONPATH": str(tmp_path / "deps"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PORT": "4321",
        "PLAT_HOST": "127.0.0.1",
        "PLAT_FUNCTION": "fn",
        "PLAT_VERSION": "v9",
    }
    s = InstanceSpec("fn", "v9", "", env={"NODE_PATH": "/mine", "NODE_ENV": "development"})
    env = instance_environment(s, tmp_path, "node", 1, {})
    assert env["NODE_PATH"] == f"{tmp_path / 'deps' / 'node_modules'}{os.pathsep}/mine"
    assert env["NODE_ENV"] == "development"
    assert env["PATH"]  # a default even when the daemon has none


class _FakeProc:
    """An exited process: only what output() asks of it."""

    returncode = 0
    pid = 0

    async def wait(self) -> int:
        return 0


async def test_output_lines_are_split_bounded_and_buffered() -> None:
    inst = _Instance(RunningInstance("r", "fn", "v", "127.0.0.1", 1, "0"), _FakeProc())  # type: ignore[arg-type]
    reader = asyncio.StreamReader()
    long = b"x" * (MAX_LINE_BYTES * 2 + 10)
    reader.feed_data(b"first\r\nsec")
    reader.feed_data(b"ond\n" + long + b"\n")
    reader.feed_data(b"".join(b"n%d\n" % i for i in range(BACKLOG_LINES)) + b"no newline")
    reader.feed_eof()
    await ProcessBackend._read(inst, reader, "stdout")
    inst.open_streams = 0
    assert inst.total == 2 + 3 + BACKLOG_LINES + 1
    assert len(inst.lines) == BACKLOG_LINES
    assert inst.lines[-1].text == "no newline"
    # The oldest lines are gone: a late reader starts from what is kept.
    backend = ProcessBackend("d")
    backend._instances["r"] = inst
    texts = [line.text async for line in backend.output(inst.running)]
    assert len(texts) == BACKLOG_LINES and texts[0] == "n1"

    inst2 = _Instance(RunningInstance("s", "fn", "v", "127.0.0.1", 1, "0"), _FakeProc())  # type: ignore[arg-type]
    reader2 = asyncio.StreamReader()
    reader2.feed_data(b"first\r\nsec")
    reader2.feed_data(b"ond\n" + long + b"\n")
    reader2.feed_eof()
    await ProcessBackend._read(inst2, reader2, "stderr")
    pieces = [line.text for line in inst2.lines]
    assert pieces[:2] == ["first", "second"]
    assert [len(p) for p in pieces[2:]] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 10]


DAEMON_SCRIPT = """\
import asyncio, sys
from plat.daemon.drivers.base import InstanceSpec
from plat.daemon.drivers.process.backend import ProcessBackend

async def main():
    backend = ProcessBackend("doomed")
    spec = InstanceSpec("fn", "v1", sys.argv[1], env={"PLAT_HANDLER": "handler.handle"})
    inst = await backend.start(spec, "orphan")
    print(inst.backend_ref, inst.port, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_instances_die_with_a_sigkilled_daemon(tmp_path: Path) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": STUBBORN_HANDLER})
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON_SCRIPT, image],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert daemon.stdout is not None
        pid_text, port_text = (await asyncio.to_thread(daemon.stdout.readline)).split()
        pid, port = int(pid_text), int(port_text)
        assert not pid_gone(pid)
        daemon.kill()
        daemon.wait(10)
        for _ in range(250):
            if pid_gone(pid):
                break
            await asyncio.sleep(0.02)
        assert pid_gone(pid), "the instance outlived its daemon"
        assert port_closed(port)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        if daemon.stdout is not None:
            daemon.stdout.close()
