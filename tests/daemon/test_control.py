"""The control API over the real unix socket of a real daemon (Podman, Buildah)."""

from __future__ import annotations

import json
import secrets
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, copy_example, wait_for

pytestmark = pytest.mark.container


def _slow_build(tmp_path: Path) -> Path:
    """hello-dockerfile with a build step that takes a few seconds (never cached)."""
    folder = copy_example("hello-dockerfile", tmp_path)
    dockerfile = folder / "Dockerfile"
    step = (
        f"RUN echo {secrets.token_hex(4)} && "
        "for i in 1 2 3 4 5 6 7 8; do echo building $i; sleep 0.5; done\n"
    )
    text = dockerfile.read_text().replace("WORKDIR /app\n", "WORKDIR /app\n" + step)
    dockerfile.write_text(text)
    return folder


def _send_deploy(plat: PlatRunner, folder: Path) -> socket.socket:
    """POST a deploy over the control socket; the caller reads the answer (or not)."""
    body = json.dumps({"path": str(folder)}).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(120)
    sock.connect(str(plat.home / "run" / "plat.sock"))
    sock.sendall(
        b"POST /v1/functions HTTP/1.1\r\nHost: plat\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def _read_until(sock: socket.socket, until: bytes) -> None:
    seen = b""
    deadline = time.monotonic() + 120
    while until not in seen:
        assert time.monotonic() < deadline, seen[-2000:]
        chunk = sock.recv(65536)
        assert chunk, seen[-2000:]
        seen += chunk


def _reset(sock: socket.socket) -> None:
    """Close with a TCP-style abort (SO_LINGER 0), as a killed client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _version(plat: PlatRunner, name: str) -> str | None:
    listed = json.loads(plat.run("ls", "--json").stdout)
    return next((f["version"] for f in listed if f["name"] == name and f["instances"]), None)


def _log(plat: PlatRunner) -> str:
    return (plat.home / "daemon.log").read_text()


def test_a_client_gone_mid_deploy_ends_the_stream_quietly(
    fresh_plat: PlatRunner, tmp_path: Path
) -> None:
    plat = fresh_plat
    plat.run("daemon", "start")
    folder = _slow_build(tmp_path)
    # Gone mid-build: the deploy carries on without its client, to its end.
    with _send_deploy(plat, folder) as sock:
        _read_until(sock, b"building 2")
    assert wait_for(lambda: _version(plat, "hello-dockerfile") is not None, timeout=180)
    first = _version(plat, "hello-dockerfile")
    # Gone before the answer began (killed right after sending), three times.
    server = folder / "server.py"
    for i in range(3):
        server.write_text(server.read_text() + f"\n# change {i}\n")
        _reset(_send_deploy(plat, folder))
        time.sleep(0.2)
    assert wait_for(lambda: _log(plat).count("the client left") >= 4, timeout=60), _log(plat)
    # Nothing was left held: a deploy after them runs and serves.
    server.write_text(server.read_text() + "\n# last\n")
    plat.run("deploy", str(folder))
    assert _version(plat, "hello-dockerfile") not in (None, first)
    log = _log(plat)
    assert "Traceback" not in log, log[-4000:]
    assert "closing transport" not in log
    assert "ERROR" not in log
