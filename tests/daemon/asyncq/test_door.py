"""``POST /async-function/<name>`` against a real daemon (process backend: real
HTTP, a real store, real function processes, no image builds), with hostile
clients: every refusal leaves nothing in the store, every 202 is a committed row."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.daemon.asyncq.support import (
    ReceiverThread,
    basic_auth,
    count_calls,
    post_many,
    stored_attempts,
    stored_calls,
    wait_states,
)
from tests.fixtures import PlatRunner, make_runner, stop_daemon
from tests.functions import write_python_function

MAX_BODY = 64 * 1024

ECHO = """
import json

def handle(event, context):
    h = event.headers
    return {
        "method": event.method,
        "path": event.path,
        "query": dict(event.query),
        "body": event.body.decode(),
        "call_id": h.get("x-call-id"),
        "trigger": h.get("x-plat-trigger"),
        "attempt": h.get("x-plat-attempt"),
        "authorization": h.get("authorization"),
        "cookie": h.get("cookie"),
        "callback": h.get("x-callback-url"),
        "x_test": h.get("x-test"),
    }
"""

SLOW = """
import time

def handle(event, context):
    time.sleep(1.5)
    return "slow done"
"""


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    root = tmp_path_factory.mktemp("door")
    runner = make_runner(root)
    runner.env.update({"PLAT_MAX_BODY": str(MAX_BODY), "PLAT_POOL_SIZE": "0"})
    try:
        runner.run("daemon", "start", "--backend", "process")
        fns = root / "fns"
        for folder in (
            write_python_function(fns, "echo", ECHO, extra_manifest="auth: public\n"),
            write_python_function(fns, "guarded", ECHO),
            write_python_function(
                fns,
                "slow",
                SLOW,
                extra_manifest="""\
                auth: public
                scale: {min: 1, max: 1, concurrency: 1}
                async: {queue_limit: 2}
                """,
            ),
        ):
            runner.run("deploy", str(folder))
        yield runner
    finally:
        stop_daemon(runner)


def raw(port: int, data: bytes, *, close_after: bool = False, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection; the answer (until closed), or b"" when
    ``close_after`` (the client hangs up without reading)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if close_after:
            return b""
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def refused_and_nothing_stored(
    plat: PlatRunner, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, object], dict[str, str]]:
    before = count_calls(plat.home)
    res = plat.http(method, path, body, headers, auth=False)
    assert count_calls(plat.home) == before, f"{method} {path} {res.status}: a row was stored"
    payload = res.json() if res.body else {}
    assert isinstance(payload, dict)
    return res.status, payload, res.headers


def test_an_accepted_call_is_stored_whole_but_its_credentials_and_runs_once(
    plat: PlatRunner,
) -> None:
    res = plat.http(
        "POST",
        "/async-function/guarded/a/b?x=1&y=2",
        b"payload",
        {"X-Test": "kept", "Cookie": "session=secret", "X-Call-Id": "client-chosen.id_1"},
    )
    assert res.status == 202, res.body
    assert res.headers["X-Call-Id"] == "client-chosen.id_1"
    answer = res.json()
    assert answer == {
        "call_id": "client-chosen.id_1",
        "function": "guarded",
        "tenant": "default",
        "state": "queued",
        "status_url": "/api/v1/calls/client-chosen.id_1",
    }
    [row] = wait_states(
        plat.home,
        lambda calls: any(c["id"] == "client-chosen.id_1" and c["state"] == "done" for c in calls),
        30,
    )
    stored = json.dumps(json.loads(row["headers"])).lower()
    assert "authorization" not in stored and "secret" not in stored, row["headers"]
    assert row["target"] == "/a/b?x=1&y=2" and row["method"] == "POST"
    assert row["trigger"] == "async" and row["attempts"] == 1 and row["status"] == 200
    seen = json.loads(row["response_body"])
    assert seen["path"] == "/a/b" and seen["query"] == {"x": "1", "y": "2"}
    assert seen["body"] == "payload" and seen["x_test"] == "kept" and seen["method"] == "POST"
    assert seen["call_id"] == "client-chosen.id_1"
    assert seen["trigger"] == "async" and seen["attempt"] == "1"
    assert seen["cookie"] is None
    # The queue calls it as the admin (it ran); credentials never reach a function.
    assert seen["authorization"] is None


def test_a_malformed_client_call_id_is_replaced(plat: PlatRunner) -> None:
    for bad in ("has space", "x" * 129, "semi;colon", "é"):
        res = plat.http(
            "POST", "/async-function/echo", b"", {"X-Call-Id": bad.encode().decode("latin-1")}
        )
        assert res.status == 202, res.body
        assert res.headers["X-Call-Id"] != bad and len(res.headers["X-Call-Id"]) == 32


def test_unknown_function_is_404_and_nothing_is_stored(plat: PlatRunner) -> None:
    for path in (
        "/async-function/missing",
        "/async-function/missing.tenant/x",
        "/async-function/%2e%2e",
    ):
        status, body, _ = refused_and_nothing_stored(plat, "POST", path, b"x", {})
        assert status == 404 and body["error"] == "not_found", (path, body)


def test_other_methods_are_405_naming_post(plat: PlatRunner) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, body, headers = refused_and_nothing_stored(
            plat, method, "/async-function/echo", b"x" if method in ("PUT", "PATCH") else None, {}
        )
        assert status == 405 and body["error"] == "method_not_allowed", (method, body)
        assert headers["Allow"] == "POST"


def test_a_function_behind_auth_refuses_anonymous_and_wrong_callers(plat: PlatRunner) -> None:
    for headers in (
        {},
        basic_auth("not-the-password"),
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic !!!"},
    ):
        status, body, _ = refused_and_nothing_stored(
            plat, "POST", "/async-function/guarded", b"x", headers
        )
        assert status == 401 and body["error"] == "unauthorized", (headers, body)
    # Auth comes before the method: an anonymous GET learns nothing more.
    status, _, _ = refused_and_nothing_stored(plat, "GET", "/async-function/guarded", None, {})
    assert status == 401


def test_a_body_over_the_gateway_limit_is_413_and_nothing_is_stored(plat: PlatRunner) -> None:
    status, body, _ = refused_and_nothing_stored(
        plat, "POST", "/async-function/echo", b"x" * (MAX_BODY + 1), {}
    )
    assert status == 413 and body["error"] == "body_too_large"
    before = count_calls(plat.home)
    chunk = b"y" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // 8192 + 2))
    answer = raw(
        plat.port,
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert count_calls(plat.home) == before
    # Exactly the limit is fine.
    res = plat.http("POST", "/async-function/echo", b"z" * MAX_BODY)
    assert res.status == 202, res.body


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/results",
        "file:///etc/passwd",
        "127.0.0.1:8000/results",
        "http:///no-host",
        "http://example.com/results",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://localhost.evil.org/",
        "http://127.0.0.1.nip.io/",
        "http://127.0.0.1:99999/",
        "http://[::1/",
        "http://127.0.0.1\\@evil.org/",
        "http://127.0.0.1/a\tb",
        "http://127.0.0.1/" + "a" * 3000,
    ],
)
def test_a_bad_callback_url_is_400_and_nothing_is_stored(plat: PlatRunner, url: str) -> None:
    status, body, _ = refused_and_nothing_stored(
        plat, "POST", "/async-function/echo", b"x", {"X-Callback-Url": url}
    )
    assert status == 400 and body["error"] == "bad_callback_url", (url, body)


def test_a_callback_url_with_crlf_never_reaches_the_queue(plat: PlatRunner) -> None:
    before = count_calls(plat.home)
    for injected in (
        b"http://127.0.0.1:1/a\r\nX-Evil: 1",  # a header of its own: no X-Evil smuggled in
        b"http://127.0.0.1:1/a\rX-Evil: 1",
        b"http://127.0.0.1:1/a\r\n evil.org",  # obs-fold
        b"http://127.0.0.1:1/a\x00b",
    ):
        answer = raw(
            plat.port,
            b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nX-Callback-Url: "
            + injected
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        status = answer.split(b" ", 2)[1]
        if status == b"202":  # only as two headers, each harmless: the URL stopped at CRLF
            call_id = answer.split(b"X-Call-Id: ")[1].split(b"\r\n")[0].decode()
            [row] = stored_calls(plat.home, "id = ?", call_id)
            assert row["callback_url"] == "http://127.0.0.1:1/a"
            assert "evil" not in row["callback_url"]
            before += 1
        else:
            assert status == b"400", answer[:300]
    assert count_calls(plat.home) == before


def test_a_full_queue_is_429_with_retry_after_and_stores_nothing(plat: PlatRunner) -> None:
    accepted = [plat.http("POST", "/async-function/slow", b"%d" % n) for n in range(2)]
    assert [r.status for r in accepted] == [202, 202]
    status, body, headers = refused_and_nothing_stored(
        plat, "POST", "/async-function/slow", b"third", {}
    )
    assert status == 429 and body["error"] == "queue_full", body
    assert headers["Retry-After"] == "1"
    assert "queue_limit" in str(body.get("hint", "")) + str(body["message"])
    ids = {r.headers["X-Call-Id"] for r in accepted}
    wait_states(
        plat.home, lambda calls: all(c["state"] == "done" for c in calls if c["id"] in ids), 30
    )
    # Room again once they ran.
    assert plat.http("POST", "/async-function/slow", b"again").status == 202


def test_a_reused_call_id_is_409_even_when_sent_at_once(plat: PlatRunner) -> None:
    first = plat.http("POST", "/async-function/echo", b"1", {"X-Call-Id": "reused-1"})
    assert first.status == 202
    status, body, headers = refused_and_nothing_stored(
        plat, "POST", "/async-function/echo", b"2", {"X-Call-Id": "reused-1"}
    )
    assert status == 409 and body["error"] == "call_exists"
    assert headers["X-Call-Id"] == "reused-1"
    # Ten copies of one id among fifty other calls, all at once: one 202, nine 409s,
    # and the others' calls unharmed (a failed duplicate must not take them along).
    url = f"{plat.gateway}/async-function/echo"

    async def burst() -> tuple[list[int], list[str]]:
        dupes = post_many(url, 10, concurrency=10, headers={"X-Call-Id": "reused-2"})
        others = post_many(url, 50, concurrency=50)
        got_dupes, got_others = await asyncio.gather(dupes, others)
        return [a.status for a in got_dupes], [a.call_id for a in got_others if a.status == 202]

    dupes, others = asyncio.run(burst())
    assert sorted(dupes) == [202] + [409] * 9
    assert len(others) == 50
    wanted = set(others) | {"reused-2"}
    calls = wait_states(
        plat.home,
        lambda calls: wanted <= {c["id"] for c in calls if c["state"] == "done"},
        30,
    )
    [row] = [c for c in calls if c["id"] == "reused-2"]
    assert row["attempts"] == 1


def test_a_client_that_hangs_up_mid_body_queues_nothing(plat: PlatRunner) -> None:
    before = count_calls(plat.home)
    for request in (
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        + b"a" * 500,
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
        + b"a" * 30000,
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n0123456789abcdef\r\n",
        b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n",
    ):
        raw(plat.port, request, close_after=True)
    time.sleep(1.0)
    assert count_calls(plat.home) == before
    # The door still serves.
    assert plat.http("POST", "/async-function/echo", b"after").status == 202


def test_200_concurrent_accepts_are_all_committed(plat: PlatRunner) -> None:
    before = count_calls(plat.home)
    url = f"{plat.gateway}/async-function/echo"
    answers = asyncio.run(post_many(url, 200, concurrency=200))
    assert [a.status for a in answers] == [202] * 200
    ids = {a.call_id for a in answers}
    assert len(ids) == 200
    # Committed before each 202: every row is there at once, no waiting.
    rows = stored_calls(plat.home, f"id IN ({','.join('?' * len(ids))})", *ids)
    assert len(rows) == 200 and count_calls(plat.home) == before + 200
    assert {r["body"] for r in rows} == {b"%d" % n for n in range(200)}
    calls = wait_states(
        plat.home, lambda calls: ids <= {c["id"] for c in calls if c["state"] == "done"}, 60
    )
    attempts = stored_attempts(plat.home)
    for call in calls:
        if call["id"] in ids:
            assert [a["status"] for a in attempts[call["id"]]] == [200]


def test_a_callback_brings_the_answer_and_the_calls_story(plat: PlatRunner) -> None:
    with ReceiverThread() as receiver:
        res = plat.http(
            "POST", "/async-function/echo/cb", b"hello", {"X-Callback-Url": receiver.url}
        )
        assert res.status == 202
        call_id = res.headers["X-Call-Id"]
        assert receiver.wait_for({call_id}, 30)
        time.sleep(0.3)
        [delivery] = receiver.by_id()[call_id]
    h = delivery.headers
    assert h["x-plat-status"] == "200" and h["x-plat-state"] == "done"
    assert h["x-plat-attempts"] == "1" and h["x-plat-trigger"] == "async"
    assert h["x-plat-function"] == "echo" and float(h["x-plat-duration"]) > 0
    assert "x-plat-error" not in h
    assert h["content-type"].startswith("application/json")
    answer = json.loads(delivery.body)
    assert answer["body"] == "hello" and answer["path"] == "/cb"
    assert answer["callback"] is None  # the URL is the daemon's business, not the function's
    [row] = stored_calls(plat.home, "id = ?", call_id)
    assert row["callback_state"] == "delivered" and row["callback_attempts"] == 1


def test_every_call_committed_for_a_client_that_left_before_its_202_runs(
    plat: PlatRunner,
) -> None:
    before = {c["id"] for c in stored_calls(plat.home)}
    request = b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nleft"

    async def hang_up(n: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", plat.port)
        writer.write(request)
        await writer.drain()
        await asyncio.sleep(0.001 * (n % 5))
        writer.transport.abort()

    async def burst() -> None:
        await asyncio.gather(*(hang_up(n) for n in range(300)))

    asyncio.run(burst())
    time.sleep(1.0)
    left = [c for c in stored_calls(plat.home) if c["id"] not in before]
    assert left, "no call was committed: the test did not reach the window"
    ids = {c["id"] for c in left}
    wait_states(
        plat.home,
        lambda calls: all(c["state"] == "done" for c in calls if c["id"] in ids),
        30,
    )


FLAKY = """
def handle(event, context):
    if event.headers.get("x-plat-attempt") == "1":
        return {"statusCode": 500, "body": "first attempt fails"}
    return {"traceparent": event.headers.get("traceparent")}
"""


def test_a_calls_attempts_share_one_trace_the_callers_or_a_new_one(
    plat: PlatRunner, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = write_python_function(
        tmp_path_factory.mktemp("flaky"),
        "flaky",
        FLAKY,
        extra_manifest="auth: public\nasync: {retries: 2, backoff: 10ms}\n",
    )
    plat.run("deploy", str(folder))
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    given = plat.http(
        "POST",
        "/async-function/flaky",
        b"",
        {"traceparent": f"00-{caller}-00f067aa0ba902b7-01", "tracestate": "k=v"},
        auth=False,
    )
    made = plat.http("POST", "/async-function/flaky", b"", auth=False)
    ids = [str(json.loads(r.body)["call_id"]) for r in (given, made)]
    wait_states(
        plat.home,
        lambda calls: {c["id"] for c in calls if c["state"] == "done"} >= set(ids),
        timeout=30,
    )
    traces = []
    for call_id in ids:
        detail = json.loads(plat.run("call", call_id, "--json").stdout)
        assert detail["attempts"] == 2
        traces.append(detail["trace_id"])
        # Both attempts are server spans of that one trace.
        trace = json.loads(plat.run("trace", detail["trace_id"], "--json").stdout)
        servers = [s for s in trace["spans"] if s["kind"] == "server"]
        assert sorted(s["attributes"]["http.response.status_code"] for s in servers) == [200, 500]
        assert {s["attributes"]["plat.call_id"] for s in servers} == {call_id}
    assert traces[0] == caller
    assert traces[1] is not None and traces[1] != caller
    assert "trace " in plat.run("call", ids[1]).stdout
