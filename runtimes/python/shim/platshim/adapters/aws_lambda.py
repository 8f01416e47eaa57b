"""AWS Lambda handlers, ``lambda_handler(event, context)``, as plat handlers.

The handler gets the event API Gateway's HTTP API sends with payload format 2.0
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
and a Lambda-like context, and its answer is read as API Gateway reads it: a
dict with ``statusCode`` is the response (``headers``, ``multiValueHeaders``,
``cookies`` as Set-Cookie headers, ``body`` text or base64 with
``isBase64Encoded``); any other value is a 200 JSON answer (a dict or a list
as JSON, a string as it is). What API Gateway would refuse (a body that is not
a string, a bad status, bad base64) is a 500 whose reason goes to the log.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from platshim.adapters.mount import mount_of
from platshim.adapters.reply import BadReply, Reply, check_status, clean_headers
from platshim.event import Context, Event

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
_TEXT_SUFFIXES = ("+json", "+xml", "x-www-form-urlencoded")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or kind.startswith(_TEXT_TYPES) or kind.endswith(_TEXT_SUFFIXES)


def _request_time(epoch: float) -> str:
    t = time.gmtime(epoch)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def lambda_event(event: Event, request_id: str, key: str, now: float) -> dict[str, Any]:
    """The API Gateway HTTP API (payload 2.0) event of one request."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name in event.headers:
        lower = name.lower()
        values = event.headers.getlist(name)
        if lower == "cookie":
            cookies += [c.strip() for v in values for c in v.split(";") if c.strip()]
        else:
            headers[lower] = ",".join(values)
    mount = mount_of(event.headers, "", key)
    headers["host"] = mount.host  # the public one, not the instance's address
    domain = mount.host.rpartition(":")[0] if mount.host.count(":") == 1 else mount.host
    data: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": event.path,
        "rawQueryString": event.query_string,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "plat",
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": event.method,
                "path": event.path,
                "protocol": "HTTP/1.1",
                "sourceIp": mount.client or "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": _request_time(now),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        data["cookies"] = cookies
    if event.query:
        data["queryStringParameters"] = {
            name: ",".join(event.query.getlist(name)) for name in event.query
        }
    if event.body:
        text = None
        if _is_text(headers.get("content-type", "")):
            try:
                text = event.body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            data["body"] = base64.b64encode(event.body).decode("ascii")
            data["isBase64Encoded"] = True
        else:
            data["body"] = text
    return data


class LambdaContext:
    """The parts of AWS's context object a handler reads, emulated (docs/runtimes.md)."""

    def __init__(self, context: Context, request_id: str, timeout: float, memory_mb: int) -> None:
        name = context.function
        self.function_name = name
        self.function_version = context.version or "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = context.hostname
        self.identity = None
        self.client_context = None
        self.plat = context  # plat's own context: call_id, trace_id, secret(), ...
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r})"


def render(result: Any) -> Reply:
    """The HTTP response API Gateway makes of a handler's return value."""
    if not isinstance(result, dict) or "statusCode" not in result:
        if isinstance(result, str):
            body = result.encode("utf-8")
        else:
            try:
                body = json.dumps(result).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise BadReply(f"the return value is not JSON-serializable: {exc}") from None
        return Reply(200, [("Content-Type", "application/json")], body)
    status = result["statusCode"]
    status = check_status(int(status) if isinstance(status, str) and status.isdigit() else status)
    pairs: list[tuple[str, str]] = []
    for field in ("headers", "multiValueHeaders"):
        given = result.get(field) or {}
        if not isinstance(given, dict):
            raise BadReply(f"{field} must be an object of header names to values")
        for name, value in given.items():
            values = value if isinstance(value, list) else [value]
            pairs += [(str(name), str(v)) for v in values]
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list):
        raise BadReply("cookies must be a list of Set-Cookie values")
    pairs += [("Set-Cookie", str(c)) for c in cookies]
    raw = result.get("body")
    if raw is None:
        body = b""
    elif not isinstance(raw, str):
        raise BadReply(f"body must be a string (JSON-encode it), not {type(raw).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadReply("isBase64Encoded is true but the body is not valid base64") from None
    else:
        body = raw.encode("utf-8")
    headers = clean_headers(pairs)
    if body and not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return Reply(status, headers, body)


class _Adapted:
    def __init__(self, target: Callable[..., Any]) -> None:
        self.target = target
        self.key = os.environ.get("PLAT_FUNCTION", "")
        self.timeout = float(os.environ.get("PLAT_TIMEOUT") or 30)
        self.memory = int(os.environ.get("PLAT_MEMORY_MB") or 128)

    def prepare(self, event: Event, context: Context) -> tuple[dict[str, Any], LambdaContext]:
        request_id = context.call_id or str(uuid.uuid4())
        now = time.time()
        return (
            lambda_event(event, request_id, self.key, now),
            LambdaContext(context, request_id, self.timeout, self.memory),
        )


class LambdaHandler(_Adapted):
    """A plain plat handler (run in a worker thread) serving a Lambda handler."""

    def __call__(self, event: Event, context: Context) -> Reply:
        return render(self.target(*self.prepare(event, context)))


class AsyncLambdaHandler(_Adapted):
    """An ``async def lambda_handler``: served on the event loop."""

    async def __call__(self, event: Event, context: Context) -> Reply:
        return render(await self.target(*self.prepare(event, context)))


def adapt(target: Callable[..., Any], /) -> LambdaHandler | AsyncLambdaHandler:
    if inspect.iscoroutinefunction(target):
        return AsyncLambdaHandler(target)
    return LambdaHandler(target)
