"""plat.daemon.gateway: header forwarding and the JSON error bodies."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from plat.daemon.gateway import HOP_BY_HOP, forward_headers, json_error


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_end_to_end_headers_pass_through() -> None:
    out = forward_headers(
        headers(
            ("Content-Type", "application/json"),
            ("Accept", "*/*"),
            ("X-Request-Id", "abc"),
            ("Cookie", "a=1"),
        ),
        drop_auth=False,
    )
    assert out == {
        "Content-Type": "application/json",
        "Accept": "*/*",
        "X-Request-Id": "abc",
        "Cookie": "a=1",
    }


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
    out = forward_headers(headers((name, "x"), ("X-Keep", "1")), drop_auth=False)
    assert out == {"X-Keep": "1"}


def test_hop_by_hop_table() -> None:
    assert {"connection", "keep-alive", "transfer-encoding", "upgrade", "te"} <= HOP_BY_HOP
    assert all(name == name.lower() for name in HOP_BY_HOP)


def test_headers_named_in_connection_dropped() -> None:
    out = forward_headers(
        headers(
            ("Connection", "keep-alive, X-Secret ,x-other"),
            ("X-Secret", "s"),
            ("x-other", "o"),
            ("X-OTHER", "O"),
            ("X-Visible", "v"),
        ),
        drop_auth=False,
    )
    assert out == {"X-Visible": "v"}


def test_several_connection_headers() -> None:
    out = forward_headers(
        headers(
            ("Connection", "X-A"), ("Connection", "X-B"), ("X-A", "1"), ("X-B", "2"), ("X-C", "3")
        ),
        drop_auth=False,
    )
    assert out == {"X-C": "3"}


@pytest.mark.parametrize(
    ("drop_auth", "kept"), [(True, False), (False, True)], ids=["dropped", "kept"]
)
def test_authorization(drop_auth: bool, kept: bool) -> None:
    for name in ("Authorization", "authorization"):
        out = forward_headers(headers((name, "Basic eA=="), ("X-A", "1")), drop_auth=drop_auth)
        assert (name in out) is kept
        assert out["X-A"] == "1"


def test_repeated_headers_kept_separate_in_order() -> None:
    out = forward_headers(
        headers(
            ("Accept", "text/html"), ("X-Tag", "a"), ("Accept", "application/json"), ("X-Tag", "b")
        ),
        drop_auth=False,
    )
    assert out.getall("Accept") == ["text/html", "application/json"]
    assert out.getall("X-Tag") == ["a", "b"]


def test_plain_dict_accepted() -> None:
    assert forward_headers({"X-A": "1", "Host": "h"}, drop_auth=True) == {"X-A": "1"}


def test_empty_headers() -> None:
    assert forward_headers(headers(), drop_auth=True) == {}


def test_set_cookie_not_folded() -> None:
    out = forward_headers(
        headers(
            ("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"), ("Set-Cookie", "b=2")
        ),
        drop_auth=False,
    )
    assert out.getall("Set-Cookie") == ["a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2"]


# json_error


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "not_found"),
        (413, "body_too_large"),
        (502, "instance_failed"),
        (504, "function_timeout"),
    ],
)
def test_json_error(status: int, code: str) -> None:
    resp = json_error(status, code, "what happened", hint="what to do")
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert isinstance(resp.body, bytes)
    assert json.loads(resp.body) == {
        "error": code,
        "message": "what happened",
        "hint": "what to do",
    }
    assert "WWW-Authenticate" not in resp.headers


def test_json_error_without_extras() -> None:
    resp = json_error(404, "not_found", "no function named 'x' is deployed")
    assert isinstance(resp.body, bytes)
    assert json.loads(resp.body) == {
        "error": "not_found",
        "message": "no function named 'x' is deployed",
    }


def test_json_error_401_challenges_basic() -> None:
    resp = json_error(401, "unauthorized", "needs basic auth")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="plat"'
    assert isinstance(resp.body, bytes)
    assert json.loads(resp.body)["error"] == "unauthorized"
