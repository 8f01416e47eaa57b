"""The server: connections with keep-alive and pipelining, the probe and
specialisation endpoints, and the drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

from platshim.adapters import AUTO, StartupFailed
from platshim.adapters.reply import Reply, Stream, write_stream
from platshim.event import Event, Headers
from platshim.invoker import Invoker
from platshim.loader import load_handler
from platshim.output import log_error
from platshim.responses import json_bytes
from platshim.wire import MAX_HEAD, BadRequest, build_response, parse_head, read_chunked

SPECIALIZE_PATH = "/.plat/specialize"
POOL_TOKEN_HEADER = "x-plat-pool-token"
# Longer than the idle timeout of usual client pools (aiohttp: 15 s), so the
# client, not the shim, closes idle connections and no request races a close.
KEEPALIVE_SECONDS = float(os.environ.get("PLAT_KEEPALIVE_TIMEOUT", "75"))
SHUTDOWN_GRACE = float(os.environ.get("PLAT_SHUTDOWN_GRACE", "5"))
_NOT_SPECIALIZED = {
    "error": "not_specialized",
    "message": "this is a pre-started pool instance that serves no function yet",
}


def _json_response(
    status: int,
    payload: dict[str, Any],
    *,
    keep_alive: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    headers = [("Content-Type", "application/json"), *extra]
    return build_response(status, headers, json_bytes(payload), keep_alive=keep_alive)


class Shim:
    """The server: one instance per process.

    Without a handler in ``invoker`` it is a pool instance, specialised by the
    daemon (with ``pool_token``) before it serves anything but probes.
    """

    def __init__(self, invoker: Invoker, *, pool_token: str | None = None) -> None:
        self.invoker = invoker
        # Set while a generic pool instance waits to be specialised (no handler).
        self.pool_token = pool_token
        self.address = ""
        self.closing = False
        self.busy = 0
        self.idle: set[asyncio.StreamWriter] = set()

    def serving_line(self) -> str:
        invoker = self.invoker
        return (
            f"plat-shim: python {sys.version.split()[0]} serving "
            f"{invoker.function or 'function'} ({invoker.spec}) on {self.address}"
        )

    async def specialize(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Become the function the daemon names (pool mode); (status, JSON answer)."""
        try:
            payload = json.loads(body)
            env = {str(k): str(v) for k, v in dict(payload.get("env") or {}).items()}
            function = str(payload["function"])
            version = str(payload["version"])
            spec = str(payload.get("handler") or "handler.handle")
            app = str(payload.get("app") or "")
            paths = [str(p) for p in payload.get("paths") or []]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return 400, {"error": "bad_request", "message": f"invalid specialisation: {exc}"}
        if app:  # the process backend names the folders; containers have them mounted
            try:
                os.chdir(app)
            except OSError as exc:
                return 400, {"error": "bad_request", "message": f"cannot use {app}: {exc}"}
        for path in reversed(paths):
            sys.path.insert(0, path)
        os.environ.update(env)
        os.environ.update({"PLAT_FUNCTION": function, "PLAT_VERSION": version})
        os.environ["PLAT_HANDLER"] = spec
        # The code and dependencies appeared after start-up: forget cached listings.
        importlib.invalidate_caches()
        try:
            handler = load_handler(spec, os.environ.get("PLAT_ADAPTER") or AUTO)
        except Exception as exc:
            message = (
                f"cannot load the handler {spec!r} from {os.getcwd()} "
                f"({type(exc).__name__}: {exc}); the function will not start"
            )
            log_error(message, exc)
            return 500, {"error": "handler_failed", "message": message}
        self.invoker.use(handler, function, version, spec)
        try:  # an ASGI app's lifespan startup: before the instance is ready
            await self.invoker.start()
        except Exception as exc:
            message = f"the function's startup failed ({type(exc).__name__}: {exc})"
            log_error(message, exc if not isinstance(exc, StartupFailed) else None)
            self.invoker.handler = None
            return 500, {"error": "handler_failed", "message": message}
        self.pool_token = None
        print(self.serving_line(), flush=True)
        return 200, {"status": "ready"}

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until either side closes it."""
        loop = asyncio.get_running_loop()
        try:
            while not self.closing:
                self.idle.add(writer)
                idle_timer = loop.call_later(KEEPALIVE_SECONDS, writer.close)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:
                    # Shutdown cancels idle keep-alive connections (Python 3.11 does it
                    # inside readuntil); nothing is lost, so end quietly.
                    return
                except asyncio.LimitOverrunError:
                    writer.write(
                        _json_response(
                            431,
                            {"error": "bad_request", "message": "request head too large"},
                            keep_alive=False,
                        )
                    )
                    return
                finally:
                    idle_timer.cancel()
                    self.idle.discard(writer)
                head = head.lstrip(b"\r\n")
                if not head:
                    continue
                self.busy += 1
                try:
                    keep_alive = await self.request(head, reader, writer)
                finally:
                    self.busy -= 1
                if not keep_alive:
                    return
        except BadRequest as exc:
            payload = {"error": "bad_request", "message": str(exc)}
            writer.write(_json_response(exc.status, payload, keep_alive=False))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away mid-request; nobody is left to answer
        finally:
            self.idle.discard(writer)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read the rest of one request, answer it; returns whether to keep the connection."""
        method, target, version, header_items = parse_head(head)
        headers = Headers(header_items)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        # HTTP/1.1 keeps connections open unless told not to; HTTP/1.0 only when asked.
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens

        encoding = headers.get("transfer-encoding")
        length_text = headers.get("content-length")
        if encoding is not None:
            if encoding.split(",")[-1].strip().lower() != "chunked":
                raise BadRequest(f"unsupported transfer-encoding {encoding!r}", 501)
            # Both framings at once is a smuggling pattern: honour chunked, then close.
            keep_alive = keep_alive and length_text is None
            length = -1
        elif length_text is not None:
            if not length_text.isdigit():
                raise BadRequest("invalid content-length")
            length = int(length_text)
        else:
            length = 0
        if length and version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length < 0:
            body = await read_chunked(reader)
        elif length:
            body = await reader.readexactly(length)
        else:
            body = b""

        if self.closing:
            keep_alive = False
        if headers.get("x-plat-probe") == "1":
            writer.write(self.probe(keep_alive))
            await writer.drain()
            return keep_alive
        if self.invoker.handler is None:
            if (
                method == "POST"
                and target == SPECIALIZE_PATH
                and self.pool_token
                and headers.get(POOL_TOKEN_HEADER) == self.pool_token
            ):
                status, payload = await self.specialize(body)
            else:
                status, payload = 503, _NOT_SPECIALIZED
            writer.write(_json_response(status, payload, keep_alive=keep_alive))
            await writer.drain()
            return keep_alive

        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            raw_path, query = parts.path or "/", parts.query
        else:
            raw_path, _, query = target.partition("?")
        event = Event(method, unquote(raw_path) or "/", query, headers, body)
        reply = await self.invoker.invoke(event)
        status, out_headers, out_body = reply
        if self.closing:
            keep_alive = False  # SIGTERM arrived meanwhile: tell the client not to reuse us
        if isinstance(out_body, Stream):
            return await write_stream(
                writer,
                Reply(*reply),
                out_body,
                self.invoker.executor,
                keep_alive=keep_alive,
                head_only=method == "HEAD",
                what=f"{method} {event.path}",
            )
        writer.write(
            build_response(
                status, out_headers, out_body, keep_alive=keep_alive, head_only=method == "HEAD"
            )
        )
        await writer.drain()
        return keep_alive

    def probe(self, keep_alive: bool) -> bytes:
        """The answer to a probe: ready, stopping, or busy (every handler thread stuck)."""
        if self.closing:
            return _json_response(503, {"status": "stopping"}, keep_alive=keep_alive)
        if self.invoker.wedged():
            workers = self.invoker.workers
            busy = {"status": "busy", "message": f"all {workers} handler threads are busy"}
            return _json_response(
                503, busy, keep_alive=keep_alive, extra=(("X-Plat-Status", "busy"),)
            )
        return _json_response(200, {"status": "ready"}, keep_alive=keep_alive)

    async def serve(self, host: str, port: int) -> None:
        """Listen until SIGTERM/SIGINT, then drain and return."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.invoker.handler is not None:
            await self._start_handler()
        try:
            server = await asyncio.start_server(
                self.connection, host, port, limit=MAX_HEAD, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            log_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            raise SystemExit(1) from None
        self.address = f"http://{host}:{port}"
        if self.invoker.handler is not None:
            print(self.serving_line(), flush=True)
        await stop.wait()
        self.closing = True
        server.close()
        for writer in list(self.idle):
            writer.close()
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.busy and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.busy:
            log_error(f"stopping with {self.busy} request(s) still running")
        await self.invoker.stop()

    async def _start_handler(self) -> None:
        """The handler's startup (an ASGI lifespan), before the port is bound; a
        failure ends the process with status 1 and the application's message."""
        try:
            await self.invoker.start()
        except Exception as exc:
            log_error(
                f"the function's startup failed ({type(exc).__name__}: {exc}); "
                "the function will not start",
                exc if not isinstance(exc, StartupFailed) else None,
            )
            raise SystemExit(1) from None
