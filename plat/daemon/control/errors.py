"""How the control API answers what goes wrong: JSON bodies, never a traceback.

A PlatError answers with its status; aiohttp's own refusals (no route, wrong
method, body too large) become the same JSON shape; a client that left gets
nginx's 499 in the log; anything unexpected is logged and answered 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from plat.errors import PlatError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_GONE = 499  # nginx's status for a client that closed the connection


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


async def json_body(request: web.Request) -> dict[str, Any]:
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
