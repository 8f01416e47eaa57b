"""The W3C trace context each shim hands its handler, and the trace id on the log
lines of a call (``[call:<id> trace:<32 hex>] ``): real shim processes over HTTP.

The Python shim's handler spans are in test_python_shim_spans.py.
"""

from __future__ import annotations

import http.client
import secrets
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.runtimes import ServerProcess, split_tag
from tests.runtimes.shims import KINDS, NODE, ShimKind, served

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"

# Each is no trace context at all: the handler sees none, the lines carry no trace.
MALFORMED = {
    "all-zero trace id": f"00-{'0' * 32}-{PARENT_ID}-01",
    "all-zero parent id": f"00-{TRACE_ID}-{'0' * 16}-01",
    "short trace id": f"00-{TRACE_ID[:-2]}-{PARENT_ID}-01",
    "long parent id": f"00-{TRACE_ID}-{PARENT_ID}00-01",
    "one-digit flags": f"00-{TRACE_ID}-{PARENT_ID}-1",
    "no flags": f"00-{TRACE_ID}-{PARENT_ID}",
    "upper case": VALID.upper(),
    "upper-case trace id": f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    "version ff": f"ff-{TRACE_ID}-{PARENT_ID}-01",
    "later version": f"01-{TRACE_ID}-{PARENT_ID}-01",
    "not hex": f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
    "other separators": f"00_{TRACE_ID}_{PARENT_ID}_01",
    "oversized": f"{VALID}-{'a' * 8000}",
    "empty": "",
}

PYTHON_CONTEXT_HANDLER = textwrap.dedent(
    """
    import sys


    def handle(event, context):
        m = event.query.get("m", "")
        if event.path == "/context":
            return {
                "trace_id": context.trace_id,
                "traceparent": context.traceparent,
                "tracestate": context.tracestate,
                "call_id": context.call_id,
            }
        if event.path == "/lines":
            print(f"out {m}")
            sys.stderr.write(f"err {m}\\n")
            sys.stdout.write(f"unfinished {m}")
            return m
        if event.path == "/modules":
            return sorted(sys.modules)
        return {"unknown": event.path}
    """
)

NODE_CONTEXT_HANDLER = textwrap.dedent(
    """
    'use strict';
    module.exports = async (event, context) => {
      const m = event.query.m || '';
      if (event.path === '/context') {
        return {
          trace_id: context.traceId,
          alias: context.trace_id,
          traceparent: context.traceparent,
          tracestate: context.tracestate,
          call_id: context.callId,
        };
      }
      if (event.path === '/lines') {
        console.log(`out ${m}`);
        console.error(`err ${m}`);
        process.stdout.write(`unfinished ${m}`);
        return m;
      }
      return { unknown: event.path };
    };
    """
)

HANDLERS = {"python": PYTHON_CONTEXT_HANDLER, "node": NODE_CONTEXT_HANDLER}


@pytest.fixture(
    scope="module",
    params=[
        "python",
        pytest.param(
            "node", marks=pytest.mark.skipif(NODE is None, reason="node is not installed")
        ),
    ],
)
def kind(request: pytest.FixtureRequest) -> ShimKind:
    return KINDS[request.param]


@pytest.fixture(scope="module")
def shim(kind: ShimKind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from served(kind, tmp_path_factory, HANDLERS[kind.name])


def trace_context(server: ServerProcess, headers: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = server.request("GET", "/context", headers=headers).json()
    if "alias" in data:  # node: context.trace_id is the alias of context.traceId
        assert data.pop("alias") == data["trace_id"]
    return data


def new_traceparent() -> tuple[str, str]:
    """(trace id, traceparent) of a fresh random trace."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


# --- the context -------------------------------------------------------------------


def test_valid_traceparent_is_in_the_context(shim: ServerProcess) -> None:
    headers = {"traceparent": VALID, "tracestate": "plat=1,vendor=x", "X-Call-Id": "ctx-1"}
    assert trace_context(shim, headers) == {
        "trace_id": TRACE_ID,
        "traceparent": VALID,
        "tracestate": "plat=1,vendor=x",
        "call_id": "ctx-1",
    }


def test_unsampled_and_tracestate_less_traceparent_is_in_the_context(
    shim: ServerProcess,
) -> None:
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    data = trace_context(shim, {"traceparent": unsampled})
    assert data == {
        "trace_id": TRACE_ID,
        "traceparent": unsampled,
        "tracestate": None,
        "call_id": "",
    }


def test_tracestate_is_passed_on_as_it_is(shim: ServerProcess) -> None:
    # Not parsed by the shim: whatever the caller sent, up to the header size limit.
    state = ",".join(f"v{n}=" + "x" * 60 for n in range(120))
    data = trace_context(shim, {"traceparent": VALID, "tracestate": state})
    assert (data["trace_id"], data["tracestate"]) == (TRACE_ID, state)


def test_no_traceparent_no_trace(shim: ServerProcess) -> None:
    # A tracestate without its traceparent means nothing (W3C: ignore it).
    data = trace_context(shim, {"tracestate": "plat=1"})
    assert data["trace_id"] is None
    assert data["traceparent"] is None
    assert data["tracestate"] is None


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_traceparent_is_no_trace(shim: ServerProcess, value: str) -> None:
    data = trace_context(shim, {"traceparent": value, "tracestate": "plat=1"})
    assert (data["trace_id"], data["traceparent"], data["tracestate"]) == (None, None, None)


def test_two_traceparent_headers_are_no_trace(shim: ServerProcess) -> None:
    conn = shim.connection()
    try:
        conn.putrequest("GET", "/context")
        conn.putheader("traceparent", VALID)
        conn.putheader("traceparent", f"00-{'1' * 32}-{PARENT_ID}-01")
        conn.endheaders()
        resp: http.client.HTTPResponse = conn.getresponse()
        assert resp.status == 200
        assert b'"trace_id":null' in resp.read().replace(b" ", b"")
    finally:
        conn.close()


def test_concurrent_calls_see_their_own_trace(shim: ServerProcess) -> None:
    parents = [new_traceparent() if n % 3 else (None, None) for n in range(24)]

    def call(pair: tuple[str | None, str | None]) -> tuple[str | None, dict[str, Any]]:
        headers = {"traceparent": pair[1]} if pair[1] else {}
        return pair[0], trace_context(shim, headers)

    with ThreadPoolExecutor(max_workers=24) as pool:
        for trace_id, data in pool.map(call, parents):
            assert data["trace_id"] == trace_id


# --- the log tag -------------------------------------------------------------------


def tags_of(lines: list[str], marker: str) -> set[tuple[str | None, str | None, str]]:
    return {split_tag(line) for line in lines if marker in line}


def test_lines_of_a_traced_call_carry_the_trace_id(shim: ServerProcess) -> None:
    headers = {"X-Call-Id": "tr-1", "traceparent": VALID}
    assert shim.request("GET", "/lines?m=t1", headers=headers).text == "t1"
    out = shim.wait_lines("unfinished t1", 1)
    err = shim.wait_lines("err t1", 1, stream="stderr")
    assert f"[call:tr-1 trace:{TRACE_ID}] out t1" in out
    assert f"[call:tr-1 trace:{TRACE_ID}] unfinished t1" in out
    assert f"[call:tr-1 trace:{TRACE_ID}] err t1" in err
    assert tags_of(out + err, " t1") == {
        ("tr-1", TRACE_ID, "out t1"),
        ("tr-1", TRACE_ID, "unfinished t1"),
        ("tr-1", TRACE_ID, "err t1"),
    }


def test_lines_of_an_untraced_call_keep_the_plain_tag(shim: ServerProcess) -> None:
    for n, headers in enumerate(({}, {"traceparent": MALFORMED["upper case"]})):
        headers = {**headers, "X-Call-Id": f"plain-{n}"}
        assert shim.request("GET", f"/lines?m=p{n}", headers=headers).status == 200
        out = shim.wait_lines(f"unfinished p{n}", 1)
        err = shim.wait_lines(f"err p{n}", 1, stream="stderr")
        assert f"[call:plain-{n}] out p{n}" in out
        assert f"[call:plain-{n}] err p{n}" in err
        assert {trace_id for _, trace_id, _ in tags_of(out + err, f" p{n}")} == {None}


def test_traced_call_without_call_id_is_untagged(shim: ServerProcess) -> None:
    assert shim.request("GET", "/lines?m=u1", headers={"traceparent": VALID}).text == "u1"
    assert "out u1" in shim.wait_lines("out u1", 1)


def test_concurrent_calls_tag_their_own_trace(shim: ServerProcess) -> None:
    calls = [(f"cc-{n}", new_traceparent() if n % 2 else (None, None)) for n in range(20)]

    def call(entry: tuple[str, tuple[str | None, str | None]]) -> str:
        call_id, (_, traceparent) = entry
        headers = {"X-Call-Id": call_id}
        if traceparent:
            headers["traceparent"] = traceparent
        return shim.request("GET", f"/lines?m={call_id}", headers=headers).text

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(call, calls)) == [call_id for call_id, _ in calls]
    out = shim.wait_lines("unfinished cc-", 20)
    err = shim.wait_lines("err cc-", 20, stream="stderr")
    found = tags_of(out + err, "cc-")
    expected = set()
    for call_id, (trace_id, _) in calls:
        for text in ("out", "err", "unfinished"):
            expected.add((call_id, trace_id, f"{text} {call_id}"))
    assert found == expected
