"""The control API on the daemon's unix socket: what the CLI talks to.

Handlers are factories over the daemon's parts. Errors become JSON bodies with
the PlatError's status; nothing a request does can crash the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from plat import __version__
from plat.daemon.store import Invocation
from plat.errors import NotFoundError, PlatError
from plat.manifest import Manifest, Scale, load_manifest, validate_manifest
from plat.units import parse_duration

if TYPE_CHECKING:
    from plat.daemon.app import Daemon
    from plat.daemon.serving.pool import WarmPool

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_GONE = 499  # nginx's status for a client that closed the connection
MAX_TAIL = 10**9  # more log lines than any retention keeps


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PlatError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error(request, exc)
    except ConnectionResetError:
        # The client went away (a Ctrl-C, a closed editor): nobody reads an answer.
        log.info("control API %s %s: the client left", request.method, request.path)
        return web.Response(status=CLIENT_GONE, reason="Client Closed Request")
    except Exception:
        log.exception("control API %s %s failed", request.method, request.path)
        return web.json_response(
            {"error": "internal", "message": "the daemon hit an unexpected error; see daemon.log"},
            status=500,
        )


class _OneLine(logging.Filter):
    """aiohttp's protocol errors (an unparsable request, a bad target) as one warning
    line without a traceback: they say what a client sent, not what broke here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            reason = str(record.exc_info[1]).strip().splitlines()
            record.msg = f"{record.getMessage().strip()}: {' '.join(reason[:2])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


PROTOCOL_LOG = logging.getLogger("plat.daemon.control.http")
PROTOCOL_LOG.addFilter(_OneLine())


def control_runner(daemon: Daemon) -> web.AppRunner:
    """The control API's aiohttp runner, for the unix socket."""
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(control_routes(daemon))
    return web.AppRunner(app, access_log=None, handle_signals=False, logger=PROTOCOL_LOG)


def http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) as JSON errors."""
    messages = {
        404: f"no such control API route: {request.method} {request.path}",
        405: f"{request.method} is not allowed on {request.path}",
    }
    code = exc.reason.lower().replace(" ", "_") or "error"
    message = messages.get(exc.status) or exc.text or exc.reason or f"HTTP {exc.status}"
    body = {"error": code, "message": message}
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return web.json_response(body, status=exc.status, headers=headers)


def function_url(daemon: Daemon, name: str) -> str:
    return f"{daemon.gateway_url}/function/{name}"


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; PlatError (400) for anything else.

    Decoded from the bytes (UTF-8, -16 or -32, as JSON allows) whatever charset the
    Content-Type names; nesting deeper than the parser can follow is refused too.
    """
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PlatError("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise PlatError("the request body must be a JSON object")
    return data


def pool_status(pool: WarmPool | None) -> dict[str, Any]:
    if pool is None or not pool.enabled:
        return {"size": 0, "pools": []}
    return {
        "size": pool.size,
        "pools": [
            {"key": key, "ready": ready, "starting": starting, "claimed": claimed, "misses": misses}
            for key, ready, starting, claimed, misses in pool.states()
        ],
    }


def make_status(daemon: Daemon) -> Handler:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pid": os.getpid(),
                "version": __version__,
                "uptime": time.time() - daemon.started_at,
                "home": str(daemon.home.root),
                "gateway_url": daemon.gateway_url,
                "backend": daemon.backend.name,
                "backend_warning": daemon.backend_warning,
                "engine": daemon.engine_description,
                "builder": daemon.deployer.artifacts.name,
                "functions": len(daemon.controller.functions),
                "pool": pool_status(daemon.controller.pool),
            }
        )

    return status


def _function_summary(daemon: Daemon, name: str) -> dict[str, Any]:
    fs = daemon.controller.functions[name]
    return {
        "name": name,
        "runtime": fs.manifest.runtime,
        "version": fs.version,
        "image": fs.image,
        "auth": fs.manifest.auth,
        "url": function_url(daemon, name),
        "instances": sum(1 for i in fs.instances if i.state == "ready"),
        "desired": fs.target,
    }


def make_list(daemon: Daemon) -> Handler:
    async def list_functions(request: web.Request) -> web.Response:
        out = []
        for record in await daemon.store.list_functions():
            if record.name in daemon.controller.functions:
                item = _function_summary(daemon, record.name)
            else:
                item = {
                    "name": record.name,
                    "version": record.version,
                    "instances": 0,
                    "runtime": record.manifest.get("runtime"),
                    "url": None,
                }
            item["updated_at"] = record.updated_at
            out.append(item)
        return web.json_response(out)

    return list_functions


def make_describe(daemon: Daemon) -> Handler:
    async def describe(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        record = await daemon.store.get_function(name)
        if record is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        body: dict[str, Any] = {
            "name": name,
            "manifest": record.manifest,
            "source_dir": record.source_dir,
            "version": record.version,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
        }
        body["scale_override"] = record.scale_override
        fs = daemon.controller.functions.get(name)
        if fs is not None:
            body.update(_function_summary(daemon, name))
            d = fs.decision
            body["autoscaler"] = {
                "desired": fs.target,
                "actual": len(fs.ready_instances()),
                "starting": fs.starts,
                "observed_concurrency": round(d.observed_stable, 3) if d else 0.0,
                "panic_concurrency": round(d.observed_panic, 3) if d else 0.0,
                "panicking": bool(d and d.panicking),
                "in_flight": fs.inflight(),
                "queued": len(fs.waiters),
            }
            body["admission"] = fs.admission().as_dict()
        body["versions"] = [
            {
                "version": v.version,
                "image": v.image,
                "status": v.status,
                "builder": v.builder,
                "build_seconds": v.build_seconds,
                "created_at": v.created_at,
            }
            for v in await daemon.store.list_versions(name)
        ]
        keys = ("id", "version", "address", "state", "started_at", "ready_seconds")
        if fs is not None:  # what the controller holds (the store may lag: a full disk)
            rows: list[tuple[Any, ...]] = [
                (
                    i.id,
                    i.running.version,
                    i.running.address,
                    i.state,
                    i.started_at,
                    None if i.ready_seconds is None else i.ready_seconds + (i.start_seconds or 0),
                )
                for i in daemon.controller.live_instances(name)
            ]
        else:
            rows = [
                (i.id, i.version, i.address, i.state, i.started_at, i.ready_seconds)
                for i in await daemon.store.list_instances(name)
            ]
        body["instance_list"] = [dict(zip(keys, row, strict=True)) for row in rows]
        return web.json_response(body)

    return describe


def with_scale(manifest: Manifest, override: dict[str, Any]) -> Manifest:
    """``manifest`` with some of its scale settings replaced (validated)."""
    merged = {**manifest.scale.model_dump(), **override}
    try:
        scale = Scale.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'scale'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise PlatError(f"invalid scale settings: {problems}") from None
    return manifest.model_copy(update={"scale": scale})


def make_scale(daemon: Daemon) -> Handler:
    async def scale(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = await _json_body(request)
        record = await daemon.store.get_function(name)
        fs = daemon.controller.functions.get(name)
        if record is None or fs is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        changes = {k: data[k] for k in ("min", "max", "concurrency") if data.get(k) is not None}
        if data.get("reset"):
            override: dict[str, Any] | None = None
            base = validate_manifest(
                {**fs.manifest.to_dict(), "scale": (await _declared_scale(daemon, name))},
                source=f"manifest of {name}",
            )
            manifest = with_scale(base, changes) if changes else base
            override = changes or None
        else:
            override = {**(record.scale_override or {}), **changes}
            manifest = with_scale(fs.manifest, changes)
        async with daemon.deployer.locks[name]:
            await daemon.store.set_scale_override(name, override, manifest.to_dict())
            daemon.controller.rescale(name, manifest)
        return web.json_response(
            {"function": name, "scale": manifest.scale.model_dump(), "override": override}
        )

    return scale


async def _declared_scale(daemon: Daemon, name: str) -> dict[str, Any]:
    """The scale settings the function's plat.yaml declares (defaults if it is gone)."""
    record = await daemon.store.get_function(name)
    try:
        declared = await asyncio.to_thread(load_manifest, Path(record.source_dir))  # type: ignore[union-attr]
    except PlatError:
        return Scale().model_dump()
    return declared.scale.model_dump()


def make_remove(daemon: Daemon) -> Handler:
    async def remove(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await daemon.deployer.remove(name)
        daemon.metrics.remove_function(name)
        return web.json_response({"removed": name})

    return remove


def make_build_log(daemon: Daemon) -> Handler:
    async def build_log(request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info["version"]
        if version == "latest":
            versions = await daemon.store.list_versions(name)
            if not versions:
                raise NotFoundError(f"no builds of {name!r}", hint="`plat deploy` builds it")
            version = versions[0].version
        text = await daemon.store.build_log(name, version)
        if text is None:
            raise NotFoundError(f"no build {version} of {name!r}")
        return web.json_response({"function": name, "version": version, "log": text})

    return build_log


def make_shutdown(daemon: Daemon) -> Handler:
    async def shutdown(request: web.Request) -> web.Response:
        daemon.stop_event.set()
        return web.json_response({"stopping": True})

    return shutdown


def make_deploy(daemon: Daemon) -> Handler:
    async def deploy(request: web.Request) -> web.StreamResponse:
        data = await _json_body(request)
        raw_path = data.get("path")
        if not isinstance(raw_path, str):
            raise PlatError("deploy needs 'path', the function's folder")
        source = Path(raw_path)
        manifest = await asyncio.to_thread(load_manifest, source)
        record = await daemon.store.get_function(manifest.name)
        if record is not None and record.scale_override:
            manifest = with_scale(manifest, record.scale_override)
        force = bool(data.get("force", False))
        dev = bool(data.get("dev", False))

        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await daemon.deployer.deploy(
                    manifest, source, queue.put_nowait, force=force, dev=dev
                )
                queue.put_nowait(
                    {"type": "function", "function": _function_summary(daemon, manifest.name)}
                )
            except PlatError as exc:
                queue.put_nowait({"type": "error", **exc.to_json()})
            except asyncio.CancelledError:
                queue.put_nowait(
                    {
                        "type": "error",
                        "error": "superseded",
                        "message": "superseded by a newer change",
                    }
                )
                raise
            except Exception as exc:
                log.exception("deploy of %s failed", manifest.name)
                queue.put_nowait(
                    {"type": "error", "error": "internal", "message": f"deploy failed: {exc!r}"}
                )
            finally:
                queue.put_nowait(None)

        # The deploy runs to its end even if the client goes away (unless a newer
        # `plat dev` change supersedes it): its result is recorded either way.
        task = daemon.tasks.spawn(run(), name=f"deploy-{manifest.name}")
        if dev:
            daemon.deployer.supersede(manifest.name, task)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        stream = _Stream(response, f"deploy of {manifest.name}")
        await stream.start(request)
        while (event := await queue.get()) is not None:
            await stream.send(event)
        await asyncio.gather(task, return_exceptions=True)
        await stream.end()
        return response

    return deploy


class _Stream:
    """An NDJSON answer whose client may leave: then the rest is dropped quietly
    (one INFO line) and the work behind it carries on."""

    def __init__(self, response: web.StreamResponse, what: str) -> None:
        self.response = response
        self.what = what
        self.gone = False

    async def start(self, request: web.Request) -> None:
        try:
            await self.response.prepare(request)
        except (ConnectionResetError, RuntimeError):
            self._left()

    async def send(self, event: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            await self.response.write((json.dumps(event) + "\n").encode())
        except (ConnectionResetError, RuntimeError):
            self._left()

    async def end(self) -> None:
        if self.gone:
            return
        try:
            await self.response.write_eof()
        except (ConnectionResetError, RuntimeError):
            self._left()

    def _left(self) -> None:
        if not self.gone:
            self.gone = True
            log.info("%s: the client left; it carries on to its end", self.what)


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        raise PlatError(f"bad --since {value!r}: {exc}") from None


def make_logs(daemon: Daemon) -> Handler:
    """History, then (with follow=1) live lines, as NDJSON; no line twice, none skipped."""

    async def logs(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if await daemon.store.get_function(name) is None:
            raise NotFoundError(f"no function named {name!r}", hint="`plat ls` lists functions")
        q = request.query
        since = _since(q.get("since"))
        raw_tail = q.get("tail", "")
        # isdigit() takes "²", which int() refuses; SQLite takes at most 2**63 - 1.
        tail = min(int(raw_tail), MAX_TAIL) if raw_tail.isascii() and raw_tail.isdecimal() else None
        instance = q.get("instance") or None
        follow = q.get("follow") == "1"
        sub = daemon.journal.subscribe(name) if follow else None
        try:
            await daemon.journal.flush()
            history = await daemon.store.query_logs(name, since=since, tail=tail, instance=instance)
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            last = 0
            for line in history:
                await response.write((json.dumps(line.to_json()) + "\n").encode())
                last = line.id
            if sub is not None:
                async for line in sub:
                    if line.id <= last or (instance and not line.instance.startswith(instance)):
                        continue
                    await response.write((json.dumps(line.to_json()) + "\n").encode())
            await response.write_eof()
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            if sub is not None:
                sub.close()

    return logs


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(records: list[Invocation]) -> dict[str, Any]:
    durations = sorted(r.duration for r in records)
    errors = sum(1 for r in records if r.status >= 500)
    client_errors = sum(1 for r in records if 400 <= r.status < 500)
    return {
        "invocations": len(records),
        "errors": errors,
        "client_errors": client_errors,
        "error_rate": errors / len(records) if records else 0.0,
        "p50": percentile(durations, 0.50),
        "p95": percentile(durations, 0.95),
        "p99": percentile(durations, 0.99),
        "cold_starts": sum(1 for r in records if r.cold),
        "bytes_in": sum(r.bytes_in for r in records),
        "bytes_out": sum(r.bytes_out for r in records),
    }


def make_stats(daemon: Daemon) -> Handler:
    async def stats(request: web.Request) -> web.Response:
        window = request.query.get("since") or "1h"
        since = _since(window)
        assert since is not None
        function = request.query.get("function") or None
        if function and await daemon.store.get_function(function) is None:
            raise NotFoundError(f"no function named {function!r}")
        await daemon.journal.flush()
        records = await daemon.store.query_invocations(since, function)
        by_function: dict[str, list[Invocation]] = {}
        for record in records:
            by_function.setdefault(record.function, []).append(record)
        if function:
            by_function.setdefault(function, [])
        return web.json_response(
            {
                "since": window,
                "functions": [
                    {"function": fn, **summarize(recs)} for fn, recs in sorted(by_function.items())
                ],
            }
        )

    return stats


def control_routes(daemon: Daemon) -> list[web.RouteDef]:
    return [
        web.get("/v1/status", make_status(daemon)),
        web.get("/v1/functions", make_list(daemon)),
        web.post("/v1/functions", make_deploy(daemon)),
        web.get("/v1/functions/{name}", make_describe(daemon)),
        web.delete("/v1/functions/{name}", make_remove(daemon)),
        web.get("/v1/functions/{name}/builds/{version}", make_build_log(daemon)),
        web.get("/v1/functions/{name}/logs", make_logs(daemon)),
        web.get("/v1/stats", make_stats(daemon)),
        web.patch("/v1/functions/{name}/scale", make_scale(daemon)),
        web.post("/v1/shutdown", make_shutdown(daemon)),
    ]
