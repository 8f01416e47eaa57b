"""``POST /async-function/<name>[.<tenant>][/<path>]``: a call queued, answered 202.

The same function names, auth and body limit as the synchronous route. The
request (method, path, query, headers but its credentials, body) is committed to
the store before the answer, which carries the call's id (``X-Call-Id``, and a
JSON body with where to look it up). ``X-Callback-Url`` asks for the result to
be POSTed there (:mod:`.callbacks` says which addresses are allowed). Every
attempt carries the call's ``traceparent``: the caller's, or one made at the
accept, so a call's attempts are one trace (``plat trace``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from plat.daemon.asyncq.queue import AsyncQueue, CallExists, QueueFull
from plat.daemon.gateway import TO_FUNCTION_NO_AUTH, Gateway
from plat.daemon.http.message import ClientGone, Request, Response
from plat.daemon.http.relay import CALL_ID_RE, Call, forward_headers, send_error
from plat.daemon.store.calls import QueuedCall
from plat.daemon.tracing.context import parse_traceparent
from plat.tenancy import split_key

log = logging.getLogger(__name__)

# Not kept with the call: credentials, and what the queue sets on every attempt.
NOT_KEPT = TO_FUNCTION_NO_AUTH | {
    b"cookie",
    b"x-callback-url",
    b"x-plat-trigger",
    b"x-plat-attempt",
}
MAX_CALLBACK_URL = 2048


def kept_headers(request: Request) -> list[tuple[str, str]]:
    """The request's headers every attempt sends: a valid ``traceparent`` of the
    caller's, or a new one (sampled), so that the attempts share one trace."""
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in forward_headers(request.headers, NOT_KEPT)
    ]
    if parse_traceparent(request.header(b"traceparent")) is None:
        headers = [(k, v) for k, v in headers if k.lower() not in ("traceparent", "tracestate")]
        headers.append(("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"))
    return headers


class AsyncDoor:
    """The gateway's handler of ``/async-function/``; ``check_callback`` says what is
    wrong with a callback URL (None when it may be used)."""

    def __init__(
        self,
        gateway: Gateway,
        queue: AsyncQueue,
        check_callback: Callable[[str], str | None],
    ) -> None:
        self.gateway = gateway
        self.queue = queue
        self.check_callback = check_callback

    async def __call__(
        self, request: Request, response: Response, raw_name: bytes, subpath: bytes
    ) -> None:
        with contextlib.suppress(ClientGone):
            await self._accept(request, response, raw_name, subpath)

    async def _accept(
        self, request: Request, response: Response, raw_name: bytes, subpath: bytes
    ) -> None:
        gateway = self.gateway
        if b"%" in raw_name:
            raw_name = unquote_to_bytes(raw_name)
        name = raw_name.decode("utf-8", "replace")
        given = request.header(b"x-call-id")
        store = self.queue.store
        fresh = given is None or not CALL_ID_RE.fullmatch(given)
        call = Call(gateway.call_ids.new() if given is None or fresh else given.decode())
        fs = gateway.controller.functions.get(name)
        if fs is None:
            send_error(response, call, 404, "not_found", f"no function named {name!r} is deployed")
            return
        if fs.manifest.auth != "public" and not gateway.admits(request, response, fs, call):
            return
        if request.method != b"POST":
            send_error(
                response,
                call,
                405,
                "method_not_allowed",
                "queue a call with POST /async-function/<name>[/<path>]",
                [b"Allow: POST\r\n"],
            )
            return
        callback = request.header(b"x-callback-url")
        callback_url = None
        if callback is not None:
            callback_url = callback.decode("latin-1").strip()
            problem = (
                f"X-Callback-Url is longer than {MAX_CALLBACK_URL} characters"
                if len(callback_url) > MAX_CALLBACK_URL
                else self.check_callback(callback_url)
            )
            if problem is not None:
                send_error(response, call, 400, "bad_callback_url", problem)
                return
        body = await gateway.read_body(request, response, call)
        if body is False:
            return
        if body is None:  # a large body, not read yet: whole, within the limit
            body = await request.read(gateway.max_body)
        if not fresh and await store.get_call(call.call_id) is not None:
            _exists(response, call)
            return
        target = subpath + b"?" + request.query if request.query else subpath
        now = time.time()
        queued = QueuedCall(
            id=call.call_id,
            function=fs.name,
            trigger="async",
            method=request.method.decode("latin-1"),
            target=target.decode("latin-1"),
            headers=kept_headers(request),
            body=body,
            callback_url=callback_url,
            created_at=now,
            next_at=now,
            updated_at=now,
        )
        try:
            await self.queue.accept(queued, fs.manifest)
        except QueueFull as exc:
            retry = [b"Retry-After: 1\r\n"]
            send_error(response, call, 429, exc.code, exc.message, retry, hint=exc.hint)
            return
        except (CallExists, sqlite3.IntegrityError):  # the same id, sent twice at once
            _exists(response, call)
            return
        except (sqlite3.Error, OSError) as exc:
            log.error("queuing a call of %s failed: %s", name, exc)
            send_error(
                response,
                call,
                503,
                "store_unavailable",
                f"the call could not be stored ({exc}); nothing was queued",
                [b"Retry-After: 1\r\n"],
            )
            return
        plain, tenant = split_key(fs.name)
        body_out = json.dumps(
            {
                "call_id": call.call_id,
                "function": plain,
                "tenant": tenant,
                "state": "queued",
                "status_url": f"/api/v1/calls/{call.call_id}",
            }
        ).encode()
        call.status = 202
        response.send(
            202,
            [b"Content-Type: application/json; charset=utf-8\r\n", call.id_line],
            body_out,
        )


def _exists(response: Response, call: Call) -> None:
    send_error(
        response,
        call,
        409,
        "call_exists",
        f"a call with id {call.call_id} was queued already",
        hint="send a new X-Call-Id, or none",
    )
