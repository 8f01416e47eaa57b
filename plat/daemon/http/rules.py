"""What the HTTP server refuses before a handler sees a request, and how it says so.

The server parses with llhttp, which is lenient where nginx and RFC 9112 are
not: it takes HTTP/0.9 request lines and HTTP/2.0 as a version, and leaves
Host alone. ``check_head`` adds those rules; ``parser_refusal`` turns an
llhttp error into an answer. Every refusal is a JSON body
``{"error": code, "message": ...}`` sent with ``Connection: close``.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from plat.daemon.http.message import date_line, reason

MAX_HEAD = 64 * 1024  # request line and header lines, per request


class Refusal(NamedTuple):
    status: int
    code: str
    message: str
    head_only: bool = False  # the answer to a HEAD request: no body

    def response(self) -> bytes:
        """The whole answer, closing the connection."""
        body = json.dumps({"error": self.code, "message": self.message}).encode()
        return b"HTTP/1.1 %d %s\r\n%sContent-Type: application/json; charset=utf-8\r\n" % (
            self.status,
            reason(self.status),
            date_line(),
        ) + b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            len(body),
            b"" if self.head_only else body,
        )


HEAD_TOO_LARGE = Refusal(
    431, "head_too_large", f"the request line and headers are larger than {MAX_HEAD} bytes"
)
NO_HOST = Refusal(400, "bad_request", "an HTTP/1.1 request needs a Host header")
TWO_HOSTS = Refusal(400, "bad_request", "the request has more than one Host header")
HTTP09 = Refusal(400, "bad_request", "HTTP/0.9 requests are not served; send HTTP/1.1")
ASTERISK = Refusal(400, "bad_request", "the target * is only for OPTIONS")
BAD_CODING = Refusal(400, "bad_request", "a request body's Transfer-Encoding must end with chunked")
CONNECT = Refusal(405, "method_not_allowed", "this server does not tunnel (CONNECT)")
AT_CAPACITY = Refusal(503, "too_many_connections", "the server is at its connection limit")


def timed_out(what: str, seconds: float) -> Refusal:
    return Refusal(
        408, "request_timeout", f"the request {what} did not arrive within {seconds:g} s"
    )


def check_head(method: bytes, target: bytes, version: str, hosts: int) -> Refusal | None:
    """The refusal of a parsed request head, or None to serve it.

    ``hosts`` is the number of Host headers. Rules from RFC 9112 (sections 2.3,
    3.2 and 3.2.4), as nginx applies them: 1.0 and 1.1 only (505 for other
    versions, 400 for HTTP/0.9), exactly one Host on 1.1 and at most one on
    1.0, ``*`` only with OPTIONS, and no CONNECT (the server is no proxy).
    """
    if version != "1.1" and version != "1.0":
        if version == "0.9":
            return HTTP09
        return unsupported_version(version)
    if hosts != 1 and (hosts > 1 or version == "1.1"):
        return TWO_HOSTS if hosts else NO_HOST
    if method == b"CONNECT":
        return CONNECT
    if target == b"*" and method != b"OPTIONS":
        return ASTERISK
    return None


def unsupported_version(version: str) -> Refusal:
    return Refusal(505, "version_not_supported", f"HTTP/{version} is not served; send HTTP/1.1")


def parser_refusal(error: Exception) -> Refusal:
    """The answer to a request llhttp could not parse."""
    text = str(error)
    if text == "Invalid HTTP version":  # well-formed, but not 0.9, 1.0, 1.1 or 2.0
        return Refusal(505, "version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served")
    return Refusal(400, "bad_request", f"the request is not valid HTTP/1.1: {text}")
