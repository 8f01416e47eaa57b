"""Control API routes for pushing a function's current image to a registry.

``POST /v1/functions/{name}/push`` ({registry, tls_verify, authfile}) answers
with NDJSON PushEvents (plat.k8s.registry) as ``buildah push`` goes, ending
with ``pushed`` (the record) or ``error``; ``GET /v1/functions/{name}/pushes``
lists the function's pushes, newest first. The push runs in the daemon, where
the image is, so a remote CLI pushes the same way (one API, two doors); it runs
to its end (and is recorded) even when the client leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from aiohttp import web

from plat.daemon.control.errors import json_body
from plat.daemon.control.scope import scope_of
from plat.daemon.control.stream import Stream
from plat.daemon.drivers.container.push import PushJob, push
from plat.daemon.drivers.container.pushes import PushRecords
from plat.daemon.functions import Functions
from plat.daemon.tasks import TaskGroup
from plat.errors import PlatError
from plat.k8s.registry import (
    PushError,
    PushEvent,
    PushRecord,
    parse_registry,
    pushed_reference,
    repository,
)
from plat.tenancy import split_key

log = logging.getLogger(__name__)
MAX_AUTHFILE = 4096


def _authfile(value: object, door: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_AUTHFILE or "\0" in value:
        raise PlatError("authfile must be a path")
    if door == "http":
        raise PlatError(
            "authfile names a file of the daemon's host; over HTTP the daemon uses its own "
            "credentials (REGISTRY_AUTH_FILE, auth.json, ~/.docker/config.json)"
        )
    if not value.startswith("/"):
        raise PlatError(f"authfile {value[:80]!r} must be an absolute path")
    return value


async def _job(
    functions: Functions, key: str, data: dict[str, object], door: str
) -> tuple[PushJob, str, str]:
    """What to push where (and the registry and version), checked before the answer
    starts: its errors are plain 4xx answers."""
    registry = data.get("registry")
    if not isinstance(registry, str):
        raise PlatError("push needs 'registry', HOST[:PORT][/prefix]")
    registry = parse_registry(registry)
    tls_verify = data.get("tls_verify", True)
    if not isinstance(tls_verify, bool):
        raise PlatError("tls_verify must be true or false")
    authfile = _authfile(data.get("authfile"), door)
    if functions.builder == "process":
        raise PlatError(
            "push needs an image, and this daemon runs functions as local processes",
            hint="start the daemon with containers (`plat daemon start --backend container`)",
        )
    if functions.builder != "buildah":
        raise PlatError(
            f"push needs Buildah, and this daemon builds with {functions.builder!r}",
            hint="install buildah (it shares Podman's images) and restart the daemon",
        )
    record = await functions.record(key)
    name, tenant = split_key(key)
    if not record.version:
        raise PlatError(f"{name} has no version to push", hint=f"`plat deploy` {name} first")
    version = await functions.store.get_version(key, record.version)
    if version is None:
        raise PlatError(f"{name} version {record.version} is not recorded; deploy it again")
    if version.mounts:
        raise PlatError(
            f"{name} version {record.version} is a `plat dev` snapshot: its code is "
            "mounted beside the image, not in it",
            hint=f"`plat deploy` {name} to build an image with the code, then push",
        )
    destination = f"{repository(registry, name, tenant)}:{record.version}"
    job = PushJob(version.image, destination, tls_verify=tls_verify, authfile=authfile)
    return job, registry, record.version


def push_routes(functions: Functions, tasks: TaskGroup, records: PushRecords) -> list[web.RouteDef]:
    async def post_push(request: web.Request) -> web.StreamResponse:
        scope = scope_of(request)
        key = scope.key(request.match_info["name"])
        job, registry, version = await _job(functions, key, await json_body(request), scope.door)
        name, tenant = split_key(key)
        queue: asyncio.Queue[PushEvent | None] = asyncio.Queue()

        async def run() -> None:
            try:
                queue.put_nowait({"type": "phase", "message": f"pushing {job.destination}"})
                digest = await push(
                    job, lambda line: queue.put_nowait({"type": "log", "line": line})
                )
                repo = job.destination.rsplit(":", 1)[0]
                record: PushRecord = {
                    "function": name,
                    "tenant": tenant,
                    "version": version,
                    "registry": registry,
                    "repository": repo,
                    "digest": digest,
                    "reference": pushed_reference(repo, version, digest),
                    "pushed_at": time.time(),
                }
                await records.add(key, record)
                queue.put_nowait({"type": "pushed", "push": record})
            except PlatError as exc:
                queue.put_nowait(cast(PushError, {"type": "error", **exc.to_json()}))
            except Exception as exc:
                log.exception("push of %s failed", key)
                queue.put_nowait(
                    {"type": "error", "error": "internal", "message": f"push failed: {exc!r}"}
                )
            finally:
                queue.put_nowait(None)

        task = tasks.spawn(run(), name=f"push-{key}")
        stream = Stream(f"push of {key}")
        await stream.start(request)
        while (event := await queue.get()) is not None:
            await stream.send(event)
        await asyncio.gather(task, return_exceptions=True)
        await stream.end()
        return stream.response

    async def get_pushes(request: web.Request) -> web.Response:
        key = scope_of(request).key(request.match_info["name"])
        await functions.record(key)  # 404 for a function that is not there
        return web.json_response(await records.of(key))

    return [
        web.post("/v1/functions/{name}/push", post_push),
        web.get("/v1/functions/{name}/pushes", get_pushes),
    ]
