"""``POST /hooks/git/<id>`` on the gateway port: the door git servers knock on.

No credentials but the delivery's signature (see :mod:`.intake` for the order of
the checks). The body is read up to the limit and no further (413); the answer
is JSON and comes as soon as the delivery is recorded, the work runs in the
background. A route of the gateway port's in-process aiohttp application, so
``/function/`` pays nothing for it; the gateway names the client's address in
``X-Plat-Peer`` (the address the audit log records).
"""

from __future__ import annotations

import logging

from aiohttp import web

from plat.daemon.hooks.intake import NOT_FOUND, Intake, Reply
from plat.errors import PlatError

log = logging.getLogger(__name__)

PEER_HEADER = "X-Plat-Peer"
CHUNK = 64 * 1024


def receiver_routes(intake: Intake) -> list[web.RouteDef]:
    """The receiver's route, for the gateway port's aiohttp application."""

    async def receive(request: web.Request) -> web.Response:
        reply = await answer(intake, request)
        headers = {"Allow": "POST"} if reply.status == 405 else None
        return web.json_response(reply.body, status=reply.status, headers=headers)

    return [web.route("*", "/hooks/git/{hook}", receive)]


async def answer(intake: Intake, request: web.Request) -> Reply:
    hook = await intake.hook(request.match_info["hook"])
    if hook is None:
        return NOT_FOUND
    if request.method != "POST":
        return Reply(405, {"error": "method_not_allowed", "message": "deliveries are POSTed"})
    origin = request.headers.get(PEER_HEADER) or request.remote or "-"
    limit = intake.max_body
    if request.content_length is not None and request.content_length > limit:
        return await intake.oversized(hook, origin)
    body = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > limit:
            return await intake.oversized(hook, origin)

    def header(name: bytes) -> bytes | None:
        value = request.headers.get(name.decode())
        return None if value is None else value.encode("latin-1", "replace")

    try:
        return await intake.receive(hook, header, bytes(body), origin)
    except PlatError as exc:
        log.warning("a delivery of hook %s failed: %s", hook.id, exc.message)
        return Reply(exc.status, exc.to_json())
