"""Control API routes over the functions service: list, describe, deploy, scale,
remove, build logs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

from aiohttp import web

from plat.api import DeployEvent, ErrorEvent
from plat.daemon.control.errors import json_body
from plat.daemon.control.stream import Stream
from plat.daemon.functions import Functions
from plat.daemon.tasks import TaskGroup
from plat.errors import PlatError

log = logging.getLogger(__name__)


def function_routes(functions: Functions, tasks: TaskGroup) -> list[web.RouteDef]:
    async def list_functions(request: web.Request) -> web.Response:
        return web.json_response(await functions.summaries())

    async def describe(request: web.Request) -> web.Response:
        return web.json_response(await functions.describe(request.match_info["name"]))

    async def remove(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await functions.remove(name)
        return web.json_response({"removed": name})

    async def scale(request: web.Request) -> web.Response:
        data = await json_body(request)
        changes = {k: data[k] for k in ("min", "max", "concurrency") if data.get(k) is not None}
        result = await functions.rescale(
            request.match_info["name"], changes, reset=bool(data.get("reset"))
        )
        return web.json_response(result)

    async def build_log(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        version, text = await functions.build_log(name, request.match_info["version"])
        return web.json_response({"function": name, "version": version, "log": text})

    async def deploy(request: web.Request) -> web.StreamResponse:
        data = await json_body(request)
        raw_path = data.get("path")
        if not isinstance(raw_path, str):
            raise PlatError("deploy needs 'path', the function's folder")
        source = Path(raw_path)
        manifest = await functions.load(source)
        force, dev = bool(data.get("force", False)), bool(data.get("dev", False))
        queue: asyncio.Queue[DeployEvent | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await functions.deploy(manifest, source, queue.put_nowait, force=force, dev=dev)
            except PlatError as exc:
                queue.put_nowait(cast(ErrorEvent, {"type": "error", **exc.to_json()}))
            except asyncio.CancelledError:
                message = "superseded by a newer change"
                queue.put_nowait({"type": "error", "error": "superseded", "message": message})
                raise
            except Exception as exc:
                log.exception("deploy of %s failed", manifest.name)
                message = f"deploy failed: {exc!r}"
                queue.put_nowait({"type": "error", "error": "internal", "message": message})
            finally:
                queue.put_nowait(None)

        # The deploy runs to its end even if the client goes away (unless a newer
        # `plat dev` change supersedes it): its result is recorded either way.
        task = tasks.spawn(run(), name=f"deploy-{manifest.name}")
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
