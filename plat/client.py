"""The CLI's side of the control API: HTTP/JSON over the daemon's unix socket."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

from plat.errors import DaemonError, PlatError
from plat.paths import Home


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("plat", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _raise_for(status: int, body: bytes) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    message = data.get("message") or body.decode(errors="replace") or f"HTTP {status}"
    exc = PlatError(message, hint=data.get("hint"))
    exc.status = status
    exc.code = data.get("error", "error")
    raise exc


class DaemonClient:
    def __init__(self, home: Home, timeout: float | None = 30.0) -> None:
        self.home = home
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> _UnixConnection:
        return _UnixConnection(str(self.home.socket), timeout)

    def ping(self) -> bool:
        try:
            self.request("GET", "/v1/status", timeout=2.0)
            return True
        except PlatError:
            return False

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """One JSON request; raises PlatError (the daemon's message) on >= 400."""
        conn = self._connect(timeout or self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonError(
                f"the plat daemon is not running (no answer on {self.home.socket})",
                hint="start it with `plat daemon start`",
            ) from exc
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"talking to the plat daemon failed: {exc}") from exc
        finally:
            conn.close()
        if resp.status >= 400:
            _raise_for(resp.status, data)
        return json.loads(data) if data else None

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """Events of an NDJSON response, one dict per line, as they arrive."""
        conn = self._connect(None)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                _raise_for(resp.status, resp.read())
            while True:
                line = resp.readline()
                if not line:
                    break
                if line.strip():
                    yield json.loads(line)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonError("the plat daemon is not running", hint="`plat daemon start`") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"the connection to the daemon broke: {exc}") from exc
        finally:
            conn.close()
