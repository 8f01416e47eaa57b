"""Control API routes over the functions service: list, describe, deploy, scale,
remove, build logs. Names in paths are plain; the scope (plat.daemon.control.scope)
says whose function they name."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

from aiohttp import web

from plat.api import DeployEvent, ErrorEvent
from plat.daemon.audit.note import audit_note
from plat.daemon.control.errors import json_body
from plat.daemon.control.scope import scope_of
from plat.daemon.control.stream import Stream
from plat.daemon.control.upload import is_upload, receive
from plat.daemon.functions import Functions
from plat.daemon.tasks import TaskGroup
from plat.errors import PlatError
from plat.tenancy import split_key

log = logging.getLogger(__name__)


def function_key(request: web.Request) -> str:
    """The key of the function the route's ``{name}`` names, in the caller's scope."""
    return scope_of(request).key(request.match_info["name"])


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "0").lower() in ("1", "true", "yes")


async def _source(request: web.Request, uploads: Path) -> tuple[Path, bool, bool]:
    """The folder to deploy, and the force and dev flags: an uploaded tar.gz (the
    only form over HTTP), or a folder of the daemon's host named by path (socket)."""
    if is_upload(request):
        if _flag(request, "dev"):
            raise PlatError("`plat dev` runs where the daemon runs; deploy without --dev")
        return await receive(request, uploads), _flag(request, "force"), False
    if scope_of(request).door == "http":
        raise PlatError(
            "a deploy over HTTP uploads the folder: POST it as a tar.gz "
            "(Content-Type: application/gzip)",
            hint="`plat deploy` with PLAT_URL set does this",
        )
    data = await json_body(request)
    raw_path = data.get("path")
    if not isinstance(raw_path, str):
        raise PlatError("deploy needs 'path', the function's folder")
    return Path(raw_path), bool(data.get("force", False)), bool(data.get("dev", False))


def function_routes(functions: Functions, tasks: TaskGroup, uploads: Path) -> list[web.RouteDef]:
    async def list_functions(request: web.Request) -> web.Response:
        scope = scope_of(request)
        tenant = None if scope.every_tenant else scope.tenant
        return web.json_response(await functions.summaries(tenant))

    async def describe(request: web.Request) -> web.Response:
        return web.json_response(await functions.describe(function_key(request)))

    async def remove(request: web.Request) -> web.Response:
        await functions.remove(function_key(request))
        return web.json_response({"removed": request.match_info["name"]})

    async def scale(request: web.Request) -> web.Response:
        key = function_key(request)
        data = await json_body(request)
        changes = {k: data[k] for k in ("min", "max", "concurrency") if data.get(k) is not None}
        result = await functions.rescale(key, changes, reset=bool(data.get("reset")))
        return web.json_response(result)

    async def build_log(request: web.Request) -> web.Response:
        version, text = await functions.build_log(
            function_key(request), request.match_info["version"]
        )
        name = request.match_info["name"]
        return web.json_response({"function": name, "version": version, "log": text})

    async def deploy(request: web.Request) -> web.StreamResponse:
        scope = scope_of(request)
        source, force, dev = await _source(request, uploads)
        uploaded = source.parent == uploads
        if uploaded:
            functions.uploading.add(source)
        try:
            manifest = await functions.load(source, scope.tenant)
        except BaseException:
            if uploaded:
                await functions.prune_uploads(done=source)
            raise
        # The answer is a 200 stream whatever happens: the audit record's outcome is how
        # the deploy ended (seen here, as the client may have left).
        note = audit_note(request)
        note.target = split_key(manifest.name)[0]
        note.params.update(force=force, dev=dev, uploaded=uploaded)
        queue: asyncio.Queue[DeployEvent | None] = asyncio.Queue()

        def emit(event: DeployEvent) -> None:
            if event["type"] == "error":
                note.outcome = event.get("error") or "error"
            elif event["type"] == "done":
                note.params["version"] = event["version"]
            queue.put_nowait(event)

        async def run() -> None:
            try:
                await functions.deploy(manifest, source, emit, force=force, dev=dev)
            except PlatError as exc:
                emit(cast(ErrorEvent, {"type": "error", **exc.to_json()}))
            except asyncio.CancelledError:
                message = "superseded by a newer change"
                emit({"type": "error", "error": "superseded", "message": message})
                raise
            except Exception as exc:
                log.exception("deploy of %s failed", manifest.name)
                message = f"deploy failed: {exc!r}"
                emit({"type": "error", "error": "internal", "message": message})
            finally:
                if uploaded:
                    await functions.prune_uploads(done=source)
                queue.put_nowait(None)

        # The deploy runs to its end even if the client goes away (unless a newer
        # `plat dev` change supersedes it): its result is recorded either way.
        task = note.pending = tasks.spawn(run(), name=f"deploy-{manifest.name}")
        if dev:
            functions.supersede(manifest.name, task)
        stream = Stream(f"deploy of {manifest.name}")
        await stream.start(request)
        while (event := await queue.get()) is not None:
            await stream.send(event)
        await asyncio.gather(task, return_exceptions=True)
        await stream.end()
        return stream.response

    return [
        web.get("/v1/functions", list_functions),
        web.post("/v1/functions", deploy),
        web.get("/v1/functions/{name}", describe),
        web.delete("/v1/functions/{name}", remove),
        web.get("/v1/functions/{name}/builds/{version}", build_log),
        web.patch("/v1/functions/{name}/scale", scale),
    ]
