"""What a handler may return, made into a response's status, headers and body.

``str`` -> text/plain, ``bytes`` -> application/octet-stream, ``None`` -> 204,
``{"statusCode", "headers", "body"}`` -> that response (the body rendered by the
same rules), anything else -> JSON. What cannot be rendered raises InvalidResponse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from platshim.wire import TOKEN_CHARS

# A response as the server writes it: status, headers, body.
Response = tuple[int, list[tuple[str, str]], bytes]
# The shim frames the response itself: a handler does not set these.
_FORBIDDEN_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class InvalidResponse(Exception):
    """The handler returned something that cannot become an HTTP response."""


def json_bytes(value: Any) -> bytes:
    """``value`` as UTF-8 JSON; raises InvalidResponse when it is not serialisable."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(f"the return value is not JSON-serializable: {exc}") from None


def _body_bytes(body: Any) -> tuple[bytes, str | None]:
    """Body bytes and the content type they imply."""
    if body is None:
        return b"", None
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), "application/octet-stream"
    return json_bytes(body), "application/json"


def _check_header(name: str, value: str) -> None:
    if not name or any(ch not in TOKEN_CHARS for ch in name):
        raise InvalidResponse(f"invalid response header name {name!r}")
    if any(ch in value for ch in "\r\n\0"):
        raise InvalidResponse(f"the value of response header {name!r} contains a line break")


def render_result(result: Any) -> Response:
    """(status, headers, body) for a handler's return value; see the module docstring."""
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise InvalidResponse(f"statusCode must be an integer from 100 to 599, not {status!r}")
        raw_headers = result.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            raise InvalidResponse("headers must be a mapping of header names to values")
        headers: list[tuple[str, str]] = []
        for name, value in raw_headers.items():
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                text = str(item)
                _check_header(str(name), text)
                if str(name).lower() not in _FORBIDDEN_RESPONSE_HEADERS:
                    headers.append((str(name), text))
        body, content_type = _body_bytes(result.get("body"))
        if content_type and body and not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", content_type))
        return status, headers, body
    if result is None:
        return 204, [], b""
    body, content_type = _body_bytes(result)
    return 200, [("Content-Type", content_type or "application/octet-stream")], body
