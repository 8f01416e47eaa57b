"""plat.daemon.gateway: the headers a function gets, call ids and the JSON error bodies.

Which headers pass a hop at all is tested in test_relay.py.
"""

from __future__ import annotations

import json

import pytest

from plat.daemon.gateway import TO_FUNCTION, TO_FUNCTION_NO_AUTH, TO_INTERNAL
from plat.daemon.http.relay import CALL_ID_RE, HOP_BY_HOP, CallIds, forward_headers, json_error

Pairs = list[tuple[bytes, bytes]]


def pairs(*items: tuple[str, str]) -> Pairs:
    return [(name.encode(), value.encode()) for name, value in items]


def test_tables_drop_at_least_the_hop_by_hop_headers() -> None:
    for table in (TO_FUNCTION, TO_FUNCTION_NO_AUTH, TO_INTERNAL):
        assert table >= HOP_BY_HOP
    assert b"authorization" not in TO_INTERNAL  # /metrics checks it


@pytest.mark.parametrize(
    ("table", "kept"), [(TO_FUNCTION_NO_AUTH, False), (TO_FUNCTION, True)], ids=["dropped", "kept"]
)
def test_authorization_towards_the_function(table: frozenset[bytes], kept: bool) -> None:
    for name in ("Authorization", "authorization"):
        out = forward_headers(pairs((name, "Basic eA=="), ("X-A", "1")), table)
        assert ((name.encode(), b"Basic eA==") in out) is kept
        assert (b"X-A", b"1") in out


@pytest.mark.parametrize(
    "name", ["X-Call-Id", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Expect"]
)
def test_headers_the_gateway_sets_are_not_taken_from_the_client(name: str) -> None:
    assert forward_headers(pairs((name, "x"), ("X-A", "1")), TO_FUNCTION) == pairs(("X-A", "1"))


# call ids


def test_call_ids_unique_and_valid() -> None:
    ids = CallIds()
    seen = {ids.new() for _ in range(10_000)}
    assert len(seen) == 10_000
    assert all(CALL_ID_RE.fullmatch(i.encode()) for i in seen)
    assert {len(i) for i in seen} == {32}  # the shape of the uuid4().hex ids before
    assert all(int(i, 16) >= 0 for i in seen)
    assert CallIds().prefix != ids.prefix  # another daemon, another prefix


@pytest.mark.parametrize(
    ("value", "valid"),
    [("abc-123_x.y", True), ("a" * 128, True), ("a" * 129, False), ("", False), ("a b", False)],
)
def test_call_id_pattern(value: str, valid: bool) -> None:
    assert bool(CALL_ID_RE.fullmatch(value.encode())) is valid


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
    reply = json_error(status, code, "what happened", hint="what to do")
    assert reply.status == status
    assert reply.headers == [(b"Content-Type", b"application/json; charset=utf-8")]
    assert json.loads(reply.body) == {
        "error": code,
        "message": "what happened",
        "hint": "what to do",
    }


def test_json_error_without_extras() -> None:
    reply = json_error(404, "not_found", "no function named 'x' is deployed")
    assert json.loads(reply.body) == {
        "error": "not_found",
        "message": "no function named 'x' is deployed",
    }


def test_json_error_401_challenges_basic() -> None:
    reply = json_error(401, "unauthorized", "needs basic auth")
    assert reply.status == 401
    assert (b"WWW-Authenticate", b'Basic realm="plat"') in reply.headers
    assert json.loads(reply.body)["error"] == "unauthorized"
