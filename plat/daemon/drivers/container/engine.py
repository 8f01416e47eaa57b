"""One asynchronous client of the Docker Engine API (Podman's or Docker's), on the event loop.

Every call the container driver makes goes through :class:`Engine`: containers
(create, start, stop, remove, list, inspect, logs, rename, archive export),
images (inspect, remove, build) and the event stream (networks: ``networks.py``,
through ``call``). Short calls share one
keep-alive connection pool, bounded (POOL_LIMIT) and quick to let idle sockets
go (KEEPALIVE_SECONDS), so a daemon holds a few sockets to the engine however
many containers it has made. A stream that lasts as long as a container or the
daemon (a followed log, the events) gets a connection of its own, closed with
the stream, and never waits for the pool.

A call the engine cannot be reached for raises EngineError naming the endpoint
with a `plat doctor` hint; an error the engine answers raises EngineAPIError
(an EngineError) with the engine's message. "Not there" answers (404) are
results, not errors, wherever the caller cannot care (stop, remove, rename...).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import aiohttp

from plat.daemon.drivers.base import OutputLine
from plat.daemon.drivers.container.logstream import demultiplex, timestamped_lines
from plat.errors import EngineError

log = logging.getLogger(__name__)

API_VERSION = "v1.40"
# Podman's own API (``libpod=True``), for what the compatible one cannot say (an
# isolated network); 4.0.0 is the oldest version Podman 4 and 5 serve.
LIBPOD_API = "v4.0.0/libpod"
# Short calls at once on pooled connections; more wait for one to come free.
POOL_LIMIT = 16
# An idle pooled connection is closed after this long (seconds); aiohttp looks at
# them every KEEPALIVE_SECONDS, so one may stay up to twice as long.
KEEPALIVE_SECONDS = 4.0
CALL_TIMEOUT = 60.0
ARCHIVE_CHUNK = 1024 * 1024
DOCTOR_HINT = "run `plat doctor`"
# What a stream waits for: a connection, never a next chunk (a quiet log, no events).
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


class EngineAPIError(EngineError):
    """The engine answered a call with an error (the engine is there; the call failed)."""

    def __init__(self, http_status: int, explanation: str) -> None:
        super().__init__(f"container engine error: {explanation}")
        self.http_status = http_status
        self.explanation = explanation


class Reply(NamedTuple):
    """An Engine API answer: its status and decoded JSON body (None when empty)."""

    status: int
    data: Any


def explanation(reply: Reply) -> str:
    """The engine's error message from an error reply."""
    if isinstance(reply.data, dict) and reply.data.get("message"):
        return str(reply.data["message"])
    return f"HTTP {reply.status}"


async def json_objects(content: aiohttp.StreamReader) -> AsyncIterator[Any]:
    """The JSON values of a stream of them (one a line, as the engine writes them);
    a line that is not JSON is skipped."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    async for chunk in content.iter_any():
        buffer += text.decode(chunk)
        while buffer := buffer.lstrip():
            try:
                value, end = decoder.raw_decode(buffer)
            except ValueError:
                newline = buffer.find("\n")
                if newline < 0:
                    break  # the rest of the value has not come yet
                buffer = buffer[newline + 1 :]
                continue
            yield value
            buffer = buffer[end:]


class Engine:
    """The Engine API at ``endpoint`` (``unix:///path`` or ``tcp://host:port``).

    Connections are made on first use, in the running loop; ``close()`` (or leaving
    ``async with``) closes the pooled ones. ``timeout`` bounds each short call.
    """

    def __init__(self, endpoint: str, *, timeout: float = CALL_TIMEOUT) -> None:
        self._endpoint = endpoint
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        if endpoint.startswith("unix://"):
            self._socket: str | None = endpoint[len("unix://") :]
            root = "http://engine"
        else:
            self._socket = None
            root = endpoint.replace("tcp://", "http://", 1).rstrip("/")
        self._base = f"{root}/{API_VERSION}"
        self._libpod = f"{root}/{LIBPOD_API}"

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _connector(self, *, pooled: bool) -> aiohttp.BaseConnector:
        limits: dict[str, Any] = (
            {"limit": POOL_LIMIT, "keepalive_timeout": KEEPALIVE_SECONDS}
            if pooled
            else {"limit": 1, "force_close": True}
        )
        if self._socket is not None:
            return aiohttp.UnixConnector(path=self._socket, **limits)
        return aiohttp.TCPConnector(**limits)

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=self._connector(pooled=True))
        return self._session

    def _unreachable(self, exc: BaseException) -> EngineError:
        return EngineError(
            f"container engine at {self._endpoint} failed: {exc or type(exc).__name__}",
            hint=DOCTOR_HINT,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
        libpod: bool = False,
    ) -> Reply:
        """One short call on a pooled connection: its status and decoded body
        (``libpod``: of Podman's own API; Docker answers such a path 404).
        Raises EngineError when the engine cannot be reached."""
        limit = aiohttp.ClientTimeout(total=self.timeout if timeout is None else timeout)
        url = (self._libpod if libpod else self._base) + path
        try:
            async with self._pool().request(
                method, url, params=params, json=body, timeout=limit
            ) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        try:
            return Reply(status, json.loads(data) if data else None)
        except ValueError:
            return Reply(status, {"message": data.decode(errors="replace")})

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        follow: bool = False,
        timeout: aiohttp.ClientTimeout = STREAM_TIMEOUT,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response of a call whose body is read as it comes, whatever its status.

        ``follow``: the stream lasts as long as a container or the engine, so it
        gets a connection of its own instead of holding one of the pool's. Failing
        to reach the engine, before or while the body is read, raises EngineError.
        """
        try:
            async with contextlib.AsyncExitStack() as stack:
                session = self._pool()
                if follow:
                    session = await stack.enter_async_context(
                        aiohttp.ClientSession(connector=self._connector(pooled=False))
                    )
                resp = await stack.enter_async_context(
                    session.request(
                        method,
                        self._base + path,
                        params=params,
                        data=data,
                        headers=headers,
                        timeout=timeout,
                    )
                )
                yield resp
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    # --- containers ---

    async def create(self, body: Mapping[str, Any], name: str | None = None) -> str:
        """Create a container; its id."""
        reply = await self.call(
            "POST", "/containers/create", params={"name": name} if name else None, body=body
        )
        if reply.status != 201:
            raise EngineAPIError(reply.status, explanation(reply))
        return str(reply.data["Id"])

    async def start(self, ref: str) -> None:
        reply = await self.call("POST", f"/containers/{ref}/start")
        if reply.status not in (204, 304):
            raise EngineAPIError(reply.status, explanation(reply))

    async def stop(self, ref: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; a stopped or missing
        container is no error."""
        seconds = int(timeout)
        reply = await self.call(
            "POST",
            f"/containers/{ref}/stop",
            params={"t": str(seconds)},
            timeout=self.timeout + seconds,
        )
        if reply.status not in (204, 304, 404):
            raise EngineAPIError(reply.status, explanation(reply))

    async def remove(self, ref: str, *, volumes: bool = False) -> None:
        """Remove a container, running or not; a missing one is no error."""
        params = {"force": "1", "v": "1" if volumes else "0"}
        reply = await self.call("DELETE", f"/containers/{ref}", params=params)
        if reply.status not in (200, 204, 404):
            raise EngineAPIError(reply.status, explanation(reply))

    async def containers(self, filters: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        """The listing entries of the containers ``filters`` match, running or not."""
        params = {"all": "1", "filters": json.dumps(filters)}
        reply = await self.call("GET", "/containers/json", params=params)
        if reply.status != 200:
            raise EngineAPIError(reply.status, explanation(reply))
        return list(reply.data or [])

    async def inspect(self, ref: str) -> dict[str, Any] | None:
        """A container's inspect document; None when it does not exist."""
        reply = await self.call("GET", f"/containers/{ref}/json")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise EngineAPIError(reply.status, explanation(reply))
        return dict(reply.data)

    async def rename(self, ref: str, name: str) -> None:
        """A missing container is no error."""
        reply = await self.call("POST", f"/containers/{ref}/rename", params={"name": name})
        if reply.status not in (200, 204, 404):
            raise EngineAPIError(reply.status, explanation(reply))

    async def logs(self, ref: str, tail: int) -> str:
        """The last ``tail`` lines of a container's stdout and stderr, merged; "" when
        it does not exist."""
        params = {"stdout": "1", "stderr": "1", "tail": str(tail)}
        async with self.stream("GET", f"/containers/{ref}/logs", params=params) as resp:
            if resp.status == 404:
                return ""
            if resp.status != 200:
                raise EngineAPIError(resp.status, (await resp.text()).strip())
            frames = [payload async for _stream, payload in demultiplex(resp.content)]
        return b"".join(frames).decode(errors="replace")

    async def follow(self, ref: str, since: float | None = None) -> AsyncIterator[OutputLine]:
        """A container's output lines from its start (or ``since``) until it exits.
        Yields nothing when the engine refuses (the container is gone)."""
        params = {"follow": "1", "stdout": "1", "stderr": "1", "timestamps": "1"}
        if since is not None:
            params["since"] = f"{since:.6f}"
        async with self.stream(
            "GET", f"/containers/{ref}/logs", params=params, follow=True
        ) as resp:
            if resp.status != 200:
                log.warning("log stream of %s: HTTP %s", ref[:12], resp.status)
                return
            async for line in timestamped_lines(demultiplex(resp.content)):
                yield line

    async def get_archive(self, ref: str, path: str, into: Path) -> bool:
        """Write the tar archive of ``path`` in a container to the file ``into``;
        False when the container has no such path."""
        params = {"path": path}
        async with self.stream(
            "GET", f"/containers/{ref}/archive", params=params, timeout=self._chunks()
        ) as resp:
            if resp.status == 404:
                return False
            if resp.status != 200:
                raise EngineAPIError(resp.status, (await resp.text()).strip())
            with into.open("wb") as out:
                async for chunk in resp.content.iter_chunked(ARCHIVE_CHUNK):
                    await asyncio.to_thread(out.write, chunk)
        return True

    def _chunks(self) -> aiohttp.ClientTimeout:
        """A stream whose every chunk may take up to the call timeout (an export, a build)."""
        return aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.timeout)

    # --- images ---

    async def image_exists(self, ref: str) -> bool:
        reply = await self.call("GET", f"/images/{ref}/json")
        if reply.status == 404:
            return False
        if reply.status != 200:
            raise EngineAPIError(reply.status, explanation(reply))
        return True

    async def remove_image(self, ref: str) -> None:
        reply = await self.call("DELETE", f"/images/{ref}")
        if reply.status not in (200, 404):
            raise EngineAPIError(reply.status, explanation(reply))

    async def images(self, filters: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        """The listing entries (``RepoTags``, ``Created``...) of the images ``filters`` match."""
        reply = await self.call("GET", "/images/json", params={"filters": json.dumps(filters)})
        if reply.status != 200:
            raise EngineAPIError(reply.status, explanation(reply))
        return list(reply.data or [])

    async def build(
        self, context: Path, params: Mapping[str, str], extra: Mapping[str, Path] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``POST /build`` of the folder ``context`` (sent as a tar, with the files
        ``extra`` under their names; the engine applies a .dockerignore): the build's
        JSON messages as they come."""
        archive = await asyncio.to_thread(_tar_folder, context, extra or {})
        try:
            async with self.stream(
                "POST",
                "/build",
                params=params,
                data=archive,
                headers={"Content-Type": "application/x-tar"},
                timeout=self._chunks(),
            ) as resp:
                if resp.status != 200:
                    raise EngineAPIError(resp.status, (await resp.text()).strip())
                async for message in json_objects(resp.content):
                    if isinstance(message, dict):
                        yield message
        finally:
            archive.close()

    # --- events ---

    async def events(
        self, filters: Mapping[str, list[str]], since: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The engine's events that ``filters`` match, from ``since`` (seconds since
        the epoch; None: from now on), as they happen.

        Never ends while the engine runs: when the stream breaks or ends (the engine
        stopped or restarted) it raises EngineError. A caller reconnects with
        ``since`` set to the last event's time and reconciles what it missed.
        """
        params = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = f"{since:.6f}"
        async with self.stream("GET", "/events", params=params, follow=True) as resp:
            if resp.status != 200:
                raise EngineAPIError(resp.status, (await resp.text()).strip())
            async for event in json_objects(resp.content):
                if isinstance(event, dict):
                    yield event
        raise EngineError(
            f"the container engine at {self._endpoint} ended its event stream",
            hint=DOCTOR_HINT,
        )


def _tar_folder(folder: Path, extra: Mapping[str, Path]) -> IO[bytes]:
    """An unnamed temporary file holding the tar of ``folder``'s contents (links kept
    as links) and of the files ``extra`` ({name: file}), rewound."""
    archive = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    try:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    path = os.path.join(dirpath, name)
                    tar.add(path, arcname=os.path.relpath(path, folder), recursive=False)
            for name, file in extra.items():
                tar.add(file, arcname=name, recursive=False)
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    return archive
