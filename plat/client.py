"""The CLI's side of the control API: HTTP/JSON to the daemon through one of its two doors.

The unix socket (``/v1/...``) is the local admin's door; a URL (``<url>/api/v1/...``
with ``Authorization: Bearer <token>``) is anyone's with a token, from anywhere. The
requests, answers and errors are the same through both, so commands never ask which.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from plat.errors import DaemonError, PlatError
from plat.paths import Home
from plat.tenancy import valid_tenant

TENANT_HEADER = "X-Plat-Tenant"
CONNECT_TIMEOUT = 30.0
UPLOAD_CHUNK = 256 * 1024
ERROR_BODY_MAX = 64 * 1024  # what is read of an error answer
ERROR_TEXT_MAX = 300  # what of a non-JSON error answer is shown
_JSON = {"Content-Type": "application/json"}
TENANT_RULE = "1 to 32 of a-z, 0-9 and '-', starting and ending with a letter or digit"


@dataclass(frozen=True)
class Endpoint:
    """An http(s) base URL (PLAT_URL): where a plat gateway answers, perhaps below a prefix."""

    url: str  # normalised: no trailing slash
    scheme: str
    host: str
    port: int | None
    prefix: str  # "" or "/some/prefix"

    @classmethod
    def parse(cls, raw: str, what: str = "PLAT_URL") -> Endpoint:
        """Raises PlatError naming ``what`` and the fix for anything but http(s)://host[:port][/prefix]."""
        text = raw.strip()
        if not text:
            raise PlatError(f"{what} is empty", hint="e.g. PLAT_URL=http://127.0.0.1:8080")
        if "://" not in text:
            raise PlatError(
                f"{what} {text!r} has no scheme", hint=f"write it as http://{text.lstrip('/')}"
            )
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https"):
            raise PlatError(
                f"{what} {text!r}: the scheme must be http or https, not {parts.scheme!r}",
                hint="e.g. PLAT_URL=http://127.0.0.1:8080",
            )
        try:
            port = parts.port
        except ValueError:
            raise PlatError(f"{what} {text!r}: the port is not a number in 0..65535") from None
        if not parts.hostname:
            raise PlatError(f"{what} {text!r} names no host", hint="e.g. http://127.0.0.1:8080")
        if parts.username is not None or parts.password is not None:
            raise PlatError(
                f"{what} {text!r} holds credentials",
                hint="put the token in PLAT_TOKEN, not in the URL",
            )
        if parts.query or parts.fragment:
            raise PlatError(f"{what} {text!r}: a base URL has no query or fragment")
        prefix = parts.path.rstrip("/")
        scheme = parts.scheme.lower()
        return cls(f"{scheme}://{parts.netloc}{prefix}", scheme, parts.hostname, port, prefix)

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


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


class _Socket:
    """The local door: the daemon's unix socket; the caller is the admin."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.where = "the plat daemon"

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        return _UnixConnection(str(self.home.socket), timeout)

    def target(self, path: str) -> str:
        return path

    def headers(self) -> dict[str, str]:
        return {}

    def unreachable(self, exc: OSError, timeout: float | None) -> DaemonError:
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return DaemonError(
                f"the plat daemon is not running (no answer on {self.home.socket})",
                hint="start it with `plat daemon start`",
            )
        return DaemonError(f"talking to the plat daemon failed: {exc}")

    def unauthorized(self, data: dict[str, Any]) -> PlatError | None:
        return None

    def not_plat(self) -> str | None:
        return None


class _Http:
    """The remote door: ``<url>/api`` on the gateway port, with a bearer token."""

    def __init__(self, endpoint: Endpoint, token: str) -> None:
        self.endpoint = endpoint
        self.token = token
        self.where = endpoint.url

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        return self.endpoint.connection(timeout)

    def target(self, path: str) -> str:
        return f"{self.endpoint.prefix}/api{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unreachable(self, exc: OSError, timeout: float | None) -> DaemonError:
        import ssl

        url = self.endpoint.url
        hint = "check PLAT_URL, and that the plat daemon runs there (`plat daemon status`)"
        if isinstance(exc, ConnectionRefusedError):
            return DaemonError(f"nothing answers at {url} (connection refused)", hint=hint)
        if isinstance(exc, socket.gaierror):
            return DaemonError(
                f"cannot find the host {self.endpoint.host!r} of {url}: {exc.strerror}", hint=hint
            )
        if isinstance(exc, TimeoutError):
            within = f"within {timeout:g} s" if timeout else "in time"
            return DaemonError(f"{url} did not answer {within}", hint=hint)
        if isinstance(exc, ssl.SSLError):
            return DaemonError(
                f"TLS with {url} failed: {exc.reason or exc}",
                hint="check the server's certificate, or use the http:// URL on a trusted network",
            )
        return DaemonError(f"talking to {url} failed: {exc}", hint=hint)

    def unauthorized(self, data: dict[str, Any]) -> PlatError:
        exc = PlatError(
            "the token was refused: check PLAT_TOKEN",
            hint=data.get("hint")
            or "a tenant's token is printed by `plat tenant create` (or "
            "`plat tenant token NAME --rotate`); the admin's by `plat auth token`",
        )
        exc.status = 401
        exc.code = "unauthorized"
        return exc

    def not_plat(self) -> str:
        return f"is {self.endpoint.url} a plat gateway? (PLAT_URL)"


_Door = _Socket | _Http


class DaemonClient:
    """Requests to the daemon: over its unix socket, or to ``url`` with ``token``.

    ``tenant`` is sent as ``X-Plat-Tenant`` on every request: which tenant an admin
    acts for (a tenant's token always acts for its own). Raises PlatError at once
    for a malformed url, a missing token or a tenant name that cannot be one.
    """

    def __init__(
        self,
        home: Home | None = None,
        timeout: float | None = 30.0,
        *,
        url: str | None = None,
        token: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.timeout = timeout
        if tenant and not valid_tenant(tenant):
            raise PlatError(f"{tenant!r} is not a tenant name", hint=TENANT_RULE)
        self.tenant = tenant or None
        self.home = home
        self.token = token
        self._door: _Door
        if url is not None:
            if not token:
                raise PlatError("a daemon at a URL needs a token", hint="set PLAT_TOKEN")
            self.endpoint: Endpoint | None = Endpoint.parse(url)
            self._door = _Http(self.endpoint, token)
        elif home is not None:
            self.endpoint = None
            self._door = _Socket(home)
        else:
            raise ValueError("a DaemonClient needs a home (the unix socket) or a url")

    @property
    def remote(self) -> bool:
        """Whether requests go over TCP to a URL (then the daemon's files are not here)."""
        return isinstance(self._door, _Http)

    @property
    def where(self) -> str:
        return self._door.where

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
        payload = None if body is None else json.dumps(body).encode()
        headers = _JSON if payload is not None else {}
        return self._json(method, path, payload, headers, timeout or self.timeout)

    def send(
        self,
        method: str,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        timeout: float | None = None,
    ) -> Any:
        """One request with a raw body (a secret's value); the JSON answer."""
        return self._json(
            method, path, data, {"Content-Type": content_type}, timeout or self.timeout
        )

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """Events of an NDJSON response, one dict per line, as they arrive."""
        if body is None:
            return self._stream(method, path, None, 0, {})
        payload = json.dumps(body).encode()
        return self._stream(method, path, io.BytesIO(payload), len(payload), _JSON)

    def upload(
        self,
        method: str,
        path: str,
        body: IO[bytes],
        size: int,
        content_type: str,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Send ``size`` bytes read from ``body`` as the request body, then yield the
        events of the NDJSON answer as they arrive. ``progress`` is told the bytes
        sent so far after each chunk. An answer the server gives before the body is
        all sent (413: too large) is read and raised like any other."""
        return self._stream(method, path, body, size, {"Content-Type": content_type}, progress)

    # -- mechanics ------------------------------------------------------------

    def _stream(
        self,
        method: str,
        path: str,
        body: IO[bytes] | None,
        size: int,
        headers: dict[str, str],
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        conn = self._door.connection(CONNECT_TIMEOUT)
        try:
            with self._errors(CONNECT_TIMEOUT):
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(None)  # a build, or `logs -f`, may be quiet for minutes
                conn.putrequest(method, self._door.target(path))
                if body is not None:
                    headers = {**headers, "Content-Length": str(size)}
                for key, value in self._headers(headers).items():
                    conn.putheader(key, value)
                conn.endheaders()
                # A server that answers early (413: too large) stops reading; its answer says why.
                with suppress(BrokenPipeError, ConnectionResetError):
                    _send_body(conn, body, size, progress)
                resp = conn.getresponse()
            yield from self._events(resp)
        finally:
            conn.close()

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {**self._door.headers(), **extra}
        if self.tenant:
            headers[TENANT_HEADER] = self.tenant
        return headers

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        payload: bytes | None,
        headers: dict[str, str],
    ) -> http.client.HTTPResponse:
        conn.request(method, self._door.target(path), body=payload, headers=self._headers(headers))
        return conn.getresponse()

    def _json(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
    ) -> Any:
        conn = self._door.connection(timeout)
        try:
            with self._errors(timeout):
                resp = self._exchange(conn, method, path, payload, headers)
                if resp.status >= 300:
                    self._raise_for(resp)
                data = resp.read()
        finally:
            conn.close()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise self._garbled() from None

    def _events(self, resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
        with self._errors(None, broke=True):
            if resp.status >= 300:
                self._raise_for(resp)
            while True:
                line = resp.readline()
                if not line:
                    break
                if line.strip():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        if not line.endswith(b"\n"):  # the last line, cut short
                            raise DaemonError(
                                f"the connection to {self.where} broke in the middle of a line"
                            ) from None
                        raise self._garbled() from None
                    yield event

    def _raise_for(self, resp: http.client.HTTPResponse) -> None:
        body = resp.read(ERROR_BODY_MAX)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = None
        if resp.status == 401:
            refused = self._door.unauthorized(data or {})
            if refused is not None:
                raise refused
        if 300 <= resp.status < 400:
            location = resp.getheader("Location") or "elsewhere"
            raise PlatError(
                f"{self.where} redirects to {location}", hint="set PLAT_URL to where it leads"
            )
        if data is None:
            text = " ".join(body.decode(errors="replace").split())[:ERROR_TEXT_MAX]
            exc = PlatError(text or f"HTTP {resp.status}", hint=self._door.not_plat())
            exc.code = "error"
        else:
            exc = PlatError(
                str(data.get("message") or f"HTTP {resp.status}"), hint=data.get("hint")
            )
            exc.code = str(data.get("error", "error"))
        exc.status = resp.status
        raise exc

    def _garbled(self) -> DaemonError:
        return DaemonError(
            f"{self.where} answered with something that is not JSON",
            hint=self._door.not_plat(),
        )

    @contextmanager
    def _errors(self, timeout: float | None, *, broke: bool = False) -> Iterator[None]:
        """Turns what the network raises into DaemonErrors that say where and what to do."""
        door = self._door
        try:
            yield
        except PlatError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if broke:
                raise DaemonError(f"the connection to {door.where} broke: {exc}") from exc
            if isinstance(exc, OSError):
                raise door.unreachable(exc, timeout) from exc
            raise DaemonError(
                f"talking to {door.where} failed: {exc!r}", hint=door.not_plat()
            ) from exc


def _send_body(
    conn: http.client.HTTPConnection,
    body: IO[bytes] | None,
    size: int,
    progress: Callable[[int], None] | None,
) -> None:
    sent = 0
    while body is not None and sent < size:
        chunk = body.read(min(UPLOAD_CHUNK, size - sent))
        if not chunk:
            raise PlatError(f"the upload ended after {sent} of {size} bytes")
        conn.send(chunk)
        sent += len(chunk)
        if progress is not None:
            progress(sent)
