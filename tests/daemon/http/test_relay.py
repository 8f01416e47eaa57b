"""plat.daemon.http.relay: which headers pass a hop, in either direction.

The relaying itself (streaming, flow control, retries, a client that leaves)
runs end to end in test_gateway_proxy.py.
"""

from __future__ import annotations

import pytest

from plat.daemon.http.relay import HOP_BY_HOP, TO_CLIENT, Call, forward_headers

Pairs = list[tuple[bytes, bytes]]


def pairs(*items: tuple[str, str]) -> Pairs:
    return [(name.encode(), value.encode()) for name, value in items]


def test_end_to_end_headers_pass_through_in_order_with_their_case() -> None:
    given = pairs(
        ("Content-Type", "application/json"),
        ("Accept", "*/*"),
        ("X-Request-Id", "abc"),
        ("Cookie", "a=1"),
    )
    assert forward_headers(given) == given


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "connection",
        "TRANSFER-ENCODING",
    ],
)
def test_hop_by_hop_dropped(name: str) -> None:
    out = forward_headers(pairs((name, "x"), ("X-Keep", "1")))
    assert out == pairs(("X-Keep", "1"))


def test_hop_by_hop_table() -> None:
    assert {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te"} <= HOP_BY_HOP
    assert all(name == name.lower() for name in HOP_BY_HOP)
    assert TO_CLIENT >= HOP_BY_HOP


def test_headers_named_in_connection_dropped() -> None:
    out = forward_headers(
        pairs(
            ("Connection", "keep-alive, X-Secret ,x-other"),
            ("X-Secret", "s"),
            ("x-other", "o"),
            ("X-OTHER", "O"),
            ("X-Visible", "v"),
        )
    )
    assert out == pairs(("X-Visible", "v"))


def test_header_named_in_connection_before_it_is_dropped() -> None:
    out = forward_headers(pairs(("X-Early", "e"), ("Connection", "x-early"), ("X-C", "3")))
    assert out == pairs(("X-C", "3"))


def test_several_connection_headers() -> None:
    out = forward_headers(
        pairs(
            ("Connection", "X-A"), ("Connection", "X-B"), ("X-A", "1"), ("X-B", "2"), ("X-C", "3")
        )
    )
    assert out == pairs(("X-C", "3"))


def test_answers_lose_framing_and_the_instances_call_id() -> None:
    out = forward_headers(
        pairs(
            ("Content-Length", "2"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("X-Call-Id", "from-instance"),
            ("Content-Type", "text/plain"),
        ),
        TO_CLIENT,
    )
    assert out == pairs(("Content-Type", "text/plain"))


def test_repeated_headers_kept_separate_in_order() -> None:
    given = pairs(
        ("Accept", "text/html"), ("X-Tag", "a"), ("Accept", "application/json"), ("X-Tag", "b")
    )
    assert forward_headers(given) == given


def test_empty_headers() -> None:
    assert forward_headers([]) == []


def test_set_cookie_not_folded() -> None:
    given = pairs(
        ("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"), ("Set-Cookie", "b=2")
    )
    assert forward_headers(given, TO_CLIENT) == given


def test_call_id_line() -> None:
    assert Call("abc").id_line == b"X-Call-Id: abc\r\n"
    assert Call("").id_line == b""  # not a function call: no id
