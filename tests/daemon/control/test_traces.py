"""GET /v1/traces and /v1/traces/{trace_id} against a real daemon on the process
backend: real calls through the gateway with a caller's traceparent, read back
through both doors (the unix socket, and /api on the gateway port with a token),
with hostile parameters, tenants, concurrent readers, and tracing turned off."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.commands.remote import create_tenant, process_daemon, remote
from tests.fixtures import PlatRunner, make_runner, stop_daemon, wait_for
from tests.functions import write_python_function

CALLER = "00f067aa0ba902b7"
HANDLER = """
import json, time

def handle(event, context):
    query = dict(event.query)
    time.sleep(float(query.get("sleep", "0")))
    traceparent = event.headers.get("traceparent")
    print("handled", traceparent)
    return {
        "statusCode": int(query.get("status", "200")),
        "body": {"traceparent": traceparent, "tracestate": event.headers.get("tracestate")},
    }
"""


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the daemon's unix socket (its caller is the admin)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(str(self.socket_path))
        self.sock = sock


class Api:
    """The control API of one daemon, through either door."""

    def __init__(self, plat: PlatRunner) -> None:
        self.plat = plat
        self.admin = plat.run("auth", "token").stdout.strip()
        assert self.admin

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """GET ``path`` (/v1/...) on the gateway's /api door with ``token`` (the
        admin's by default)."""
        result = self.plat.http(
            "GET",
            "/api" + path,
            headers={"Authorization": f"Bearer {token or self.admin}"},
            auth=False,
        )
        return result.status, json.loads(result.body)

    def socket_get(self, path: str) -> tuple[int, Any]:
        conn = UnixConnection(self.plat.home / "run" / "plat.sock")
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def traces(self, query: str = "", token: str | None = None) -> list[dict[str, Any]]:
        status, body = self.get(f"/v1/traces{query}", token)
        assert status == 200, body
        rows: list[dict[str, Any]] = body["traces"]
        return rows

    def trace(self, trace_id: str, token: str | None = None, logs: int = 0) -> dict[str, Any]:
        """The trace, once it has ``logs`` log lines (the handler's output is read
        from the instance a moment after the call has been answered)."""
        deadline = time.monotonic() + 15
        while True:
            status, body = self.get(f"/v1/traces/{trace_id}", token)
            assert status == 200, body
            assert isinstance(body, dict)
            if len(body["logs"]) >= logs or time.monotonic() > deadline:
                return body
            time.sleep(0.05)


def call(
    plat: PlatRunner, path: str, trace_id: str | None = None, flags: str = "01", **headers: str
) -> tuple[str, dict[str, Any], str]:
    """Calls ``path`` with a caller's traceparent; (trace id, what the handler saw,
    the call id)."""
    trace_id = trace_id or secrets.token_hex(16)
    headers["traceparent"] = f"00-{trace_id}-{CALLER}-{flags}"
    result = plat.http("GET", path, headers=headers)
    seen = json.loads(result.body)
    assert isinstance(seen, dict), result
    return trace_id, seen, result.headers["X-Call-Id"]


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("traces")) as runner:
        runner.run(
            "deploy", str(write_python_function(tmp_path_factory.mktemp("fn"), "hello", HANDLER))
        )
        yield runner


@pytest.fixture(scope="module")
def api(plat: PlatRunner) -> Api:
    return Api(plat)


def test_a_call_with_a_traceparent_is_listed_and_shown(plat: PlatRunner, api: Api) -> None:
    trace_id, seen, call_id = call(plat, "/function/hello", tracestate="vendor=abc,other=1")
    # The handler's parent is the gateway's upstream span, in the caller's trace.
    version, told_trace, told_span, flags = seen["traceparent"].split("-")
    assert (version, told_trace, flags) == ("00", trace_id, "01")
    assert told_span != CALLER
    assert seen["tracestate"] == "vendor=abc,other=1"  # passed on unchanged

    (row,) = [r for r in api.traces() if r["trace_id"] == trace_id]
    assert set(row) == {
        "trace_id", "function", "tenant", "version", "ts", "duration", "status", "cold", "call_id"
    }  # fmt: skip
    assert (row["function"], row["tenant"], row["status"], row["call_id"]) == (
        "hello",
        "default",
        200,
        call_id,
    )
    assert isinstance(row["cold"], bool) and 0 < row["duration"] < 30
    assert abs(row["ts"] - time.time()) < 60

    shown = api.trace(trace_id, logs=1)
    assert shown["trace_id"] == trace_id
    spans = {s["name"]: s for s in shown["spans"]}
    server, upstream = spans["GET /function/hello"], spans["upstream"]
    assert (server["parent_id"], server["kind"], server["service"]) == (CALLER, "server", "plat")
    assert server["attributes"]["plat.call_id"] == call_id
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["attributes"]["plat.version"] == row["version"]
    assert (upstream["span_id"], upstream["parent_id"]) == (told_span, server["span_id"])
    assert upstream["kind"] == "client"
    assert server["start"] <= upstream["start"] <= upstream["end"] <= server["end"]
    starts = [s["start"] for s in shown["spans"]]
    assert starts == sorted(starts)
    (log,) = [line for line in shown["logs"] if line["call_id"] == call_id]
    assert log["line"] == f"handled {seen['traceparent']}"
    assert (log["trace_id"], log["function"], log["stream"]) == (trace_id, "hello", "stdout")

    # The socket's door answers the same.
    status, by_socket = api.socket_get(f"/v1/traces/{trace_id}")
    assert status == 200 and by_socket == shown
    status, listed = api.socket_get("/v1/traces?function=hello")
    assert status == 200 and trace_id in [r["trace_id"] for r in listed["traces"]]
    # An id in capitals is the same id.
    assert api.trace(trace_id.upper())["spans"] == shown["spans"]


def test_calls_without_or_with_an_unsampled_parent(plat: PlatRunner, api: Api) -> None:
    # No traceparent: the default sampler (parent-based, always on) starts a trace.
    result = plat.http("GET", "/function/hello")
    fresh = json.loads(result.body)["traceparent"]
    _, trace_id, span_id, flags = fresh.split("-")
    assert flags == "01"
    shown = api.trace(trace_id)
    (server,) = [s for s in shown["spans"] if s["kind"] == "server"]
    assert server["parent_id"] is None
    assert [s["span_id"] for s in shown["spans"] if s["name"] == "upstream"] == [span_id]
    # The caller decided not to sample: the handler sees the caller's parent as it was,
    # and nothing is kept.
    unsampled, seen, _ = call(plat, "/function/hello", flags="00")
    assert seen["traceparent"] == f"00-{unsampled}-{CALLER}-00"
    assert unsampled not in [r["trace_id"] for r in api.traces("?limit=1000")]
    assert api.get(f"/v1/traces/{unsampled}")[0] == 404


def test_order_picks_the_slowest_and_the_failed(plat: PlatRunner, api: Api) -> None:
    failed, _, _ = call(plat, "/function/hello?status=503")
    slow, _, _ = call(plat, "/function/hello?sleep=1.5")
    quick, _, _ = call(plat, "/function/hello")
    recent = [r["trace_id"] for r in api.traces("?function=hello&limit=3")]
    assert recent == [quick, slow, failed]

    slowest = api.traces("?function=hello&order=slowest&limit=1000")
    durations = [r["duration"] for r in slowest]
    assert durations == sorted(durations, reverse=True)
    assert slowest[0]["trace_id"] == slow and slowest[0]["duration"] >= 1.5

    errors = api.traces("?function=hello&order=errors&limit=1000")
    assert failed in [r["trace_id"] for r in errors]
    assert all(r["status"] >= 500 for r in errors)
    assert quick not in [r["trace_id"] for r in errors]
    shown = api.trace(failed)
    (server,) = [s for s in shown["spans"] if s["kind"] == "server"]
    assert server["error"] is True and server["attributes"]["http.response.status_code"] == 503


def test_limit_and_since(plat: PlatRunner, api: Api) -> None:
    for _ in range(3):
        call(plat, "/function/hello")
    assert len(api.traces("?limit=1")) == 1
    assert len(api.traces("?limit=2")) == 2
    assert len(api.traces("?limit=1000")) >= 3
    assert len(api.traces("?limit=0002")) == 2
    assert len(api.traces("")) <= 20  # the default
    assert len(api.traces("?since=1h&limit=3")) == 3
    assert len(api.traces("?since=2m")) >= 3
    time.sleep(1.1)
    assert api.traces("?since=1s") == []  # nothing in the last second
    assert api.traces("?since=500ms") == []


@pytest.mark.parametrize(
    "query,message",
    [
        ("limit=0", "bad limit '0'"),
        ("limit=1001", "bad limit '1001'"),
        ("limit=-1", "bad limit '-1'"),
        ("limit=x", "bad limit 'x'"),
        ("limit=%C2%B2", "bad limit '²'"),  # a digit to str.isdigit, no number
        ("limit=%D9%A3", "bad limit '٣'"),  # an Arabic-Indic 3: a decimal to Python
        ("limit=1e3", "bad limit '1e3'"),
        ("limit=%2B5", "bad limit '+5'"),
        ("limit=%205", "bad limit ' 5'"),
        ("limit=1_000", "bad limit '1_000'"),
        ("limit=" + "1" * 5000, "bad limit '1111111111"),  # int() refuses 4300+ digits
        ("order=fastest", "bad order 'fastest'"),
        ("order=RECENT", "bad order 'RECENT'"),
        ("since=forever", "bad since 'forever'"),
        ("since=0s", "bad since '0s'"),
        ("since=-1h", "bad since '-1h'"),
        ("since=nan", "bad since 'nan'"),
        ("since=1e400s", "bad since '1e400s'"),
        ("since=" + "9" * 400 + "h", "bad since '9999999999"),  # a float of infinity
    ],
)
def test_bad_parameters_are_400s_that_say_what_to_give(api: Api, query: str, message: str) -> None:
    status, body = api.get(f"/v1/traces?{query}")
    assert status == 400, body
    assert body["error"] == "bad_request"
    assert body["message"].startswith(message)
    assert len(body["message"]) < 200  # a long value is not sent back whole
    assert any(hint in body["message"] for hint in ("1 to 1000", "recent", "e.g. 30s"))


def test_function_names_in_the_list(plat: PlatRunner, api: Api) -> None:
    for name in ("nope", "../hello", "hello.default", "HELLO", "%00"):
        status, body = api.get(f"/v1/traces?function={urllib.parse.quote(name)}")
        assert status == 404, (name, body)
        assert body["error"] == "not_found"
    assert all(r["function"] == "hello" for r in api.traces("?function=hello&limit=1000"))


@pytest.mark.parametrize(
    "raw",
    [
        "4bf92f3577b34da6a3ce929d0e0e473",  # 31
        "4bf92f3577b34da6a3ce929d0e0e47366",  # 33
        "4bf92f3577b34da6a3ce929d0e0e473g",
        "0" * 32,
        "%2e%2e",
        "..",
        "%00",
        "4bf92f3577b34da6-a3ce929d0e0e473",
        "%204bf92f3577b34da6a3ce929d0e0e473",
        "%D9%A3" * 32,  # Arabic-Indic digits
        "a" * 8000,
    ],
)
def test_malformed_trace_ids_are_400s(api: Api, raw: str) -> None:
    status, body = api.get(f"/v1/traces/{raw}")
    assert status == 400, body
    assert body["error"] == "bad_request"
    assert body["message"].startswith("bad trace id ")
    assert "32 hex digits" in body["message"]
    assert len(body["message"]) < 200


def test_an_unknown_trace_is_a_404(api: Api) -> None:
    unknown = secrets.token_hex(16)
    status, body = api.get(f"/v1/traces/{unknown}")
    assert status == 404
    assert body["error"] == "not_found"
    assert unknown in body["message"] and "plat traces" in body["hint"]
    assert api.socket_get(f"/v1/traces/{unknown}")[0] == 404


def test_tenants_see_their_own_traces_only(plat: PlatRunner, api: Api, tmp_path: Path) -> None:
    acme_token = create_tenant(plat, "acme")
    beta_token = create_tenant(plat, "beta")
    remote(plat, acme_token).run("deploy", str(write_python_function(tmp_path, "hello", HANDLER)))
    headers = {"Authorization": f"Bearer {acme_token}"}
    result = plat.http(
        "GET",
        "/function/hello.acme",
        headers={**headers, "traceparent": f"00-{'ac' * 16}-{CALLER}-01"},
        auth=False,
    )
    assert result.status == 200, result
    theirs = "ac" * 16
    ours, _, _ = call(plat, "/function/hello")

    listed = api.traces("", acme_token)
    assert [(r["trace_id"], r["function"], r["tenant"]) for r in listed] == [
        (theirs, "hello", "acme")
    ]
    shown = api.trace(theirs, acme_token, logs=1)
    assert {(s["function"], s["tenant"]) for s in shown["spans"]} == {("hello", "acme")}
    assert [line["function"] for line in shown["logs"]] == ["hello"]
    assert api.traces("?function=hello", acme_token)[0]["trace_id"] == theirs

    # Another tenant's trace is as if it did not exist.
    assert api.get(f"/v1/traces/{ours}", acme_token)[0] == 404
    assert api.get(f"/v1/traces/{theirs}", beta_token)[0] == 404
    assert api.traces("", beta_token) == []
    assert api.get("/v1/traces?function=hello", beta_token)[0] == 404
    # The admin sees every tenant.
    admin_ids = [r["trace_id"] for r in api.traces("?limit=1000")]
    assert theirs in admin_ids and ours in admin_ids
    assert api.trace(theirs)["spans"] == shown["spans"]


def test_a_trace_across_tenants_shows_each_its_part(
    plat: PlatRunner, api: Api, tmp_path: Path
) -> None:
    gamma_token = create_tenant(plat, "gamma")
    remote(plat, gamma_token).run("deploy", str(write_python_function(tmp_path, "hello", HANDLER)))
    shared, _, _ = call(plat, "/function/hello")
    call(plat, "/function/hello.gamma", trace_id=shared)
    everything = api.trace(shared, logs=2)
    servers = [s for s in everything["spans"] if s["kind"] == "server"]
    assert sorted(s["tenant"] for s in servers) == ["default", "gamma"]
    assert sorted(line["function"] for line in everything["logs"]) == ["hello", "hello"]
    part = api.trace(shared, gamma_token)
    assert {s["tenant"] for s in part["spans"]} == {"gamma"}
    assert len(part["logs"]) == 1
    # The admin choosing a tenant sees that tenant's part.
    chosen = plat.http(
        "GET",
        f"/api/v1/traces/{shared}",
        headers={"Authorization": f"Bearer {api.admin}", "X-Plat-Tenant": "gamma"},
        auth=False,
    )
    assert chosen.status == 200
    assert {s["tenant"] for s in json.loads(chosen.body)["spans"]} == {"gamma"}


def test_tokens_are_needed_on_the_gateway_door(plat: PlatRunner, api: Api) -> None:
    trace_id, _, _ = call(plat, "/function/hello")
    for headers in ({}, {"Authorization": "Bearer plat_nope_x"}, {"Authorization": "Basic x"}):
        result = plat.http("GET", f"/api/v1/traces/{trace_id}", headers=headers, auth=False)
        assert result.status == 401, headers
        assert trace_id not in result.body.decode()


def test_fifty_concurrent_readers_while_calls_go_on(plat: PlatRunner, api: Api) -> None:
    known, _, _ = call(plat, "/function/hello")
    stop = threading.Event()
    made: list[str] = []

    def caller() -> None:
        while not stop.is_set():
            made.append(call(plat, "/function/hello")[0])

    def read(n: int) -> tuple[int, str]:
        if n % 3 == 0:
            status, body = api.get(f"/v1/traces/{known}")
            assert status == 200 and body["trace_id"] == known
        elif n % 3 == 1:
            status, body = api.socket_get("/v1/traces?order=slowest&limit=50")
            assert status == 200 and isinstance(body["traces"], list)
        else:
            status, body = api.get(f"/v1/traces?function=hello&limit={n + 1}")
            assert status == 200 and len(body["traces"]) <= n + 1
        return n, "ok"

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(read, range(150)))
    finally:
        stop.set()
        for thread in callers:
            thread.join(timeout=60)
    assert results == [(n, "ok") for n in range(150)]
    assert made
    # The calls made meanwhile are kept and shown whole.
    listed = {r["trace_id"] for r in api.traces("?limit=1000")}
    assert set(made[-100:]) <= listed
    for trace_id in made[-5:]:
        names = {s["name"] for s in api.trace(trace_id)["spans"]}
        assert {"GET /function/hello", "upstream"} <= names


@contextmanager
def untraced_daemon(tmp: Path) -> Iterator[PlatRunner]:
    """A daemon on the process backend with OTEL_SDK_DISABLED=true in its environment."""
    runner = make_runner(tmp)
    runner.env["OTEL_SDK_DISABLED"] = "true"
    try:
        runner.run("daemon", "start", "--backend", "process")
        yield runner
    finally:
        stop_daemon(runner)


def test_sdk_disabled_passes_the_callers_traceparent_unchanged(tmp_path: Path) -> None:
    with untraced_daemon(tmp_path / "off") as plat:
        plat.run("deploy", str(write_python_function(tmp_path / "fn", "hello", HANDLER)))
        api = Api(plat)
        trace_id, seen, _ = call(plat, "/function/hello", tracestate="vendor=abc")
        assert seen == {"traceparent": f"00-{trace_id}-{CALLER}-01", "tracestate": "vendor=abc"}
        # Even a header the gateway could not read goes on as the caller sent it.
        odd = f"cc-{trace_id}-{CALLER}-01-future"
        result = plat.http("GET", "/function/hello", headers={"traceparent": odd})
        assert json.loads(result.body)["traceparent"] == odd
        # No traceparent: none is made up.
        assert json.loads(plat.http("GET", "/function/hello").body)["traceparent"] is None
        assert api.traces("?limit=1000") == []
        assert api.get(f"/v1/traces/{trace_id}")[0] == 404
        # The handler's line is still logged, without a trace.
        expected = f"handled 00-{trace_id}-{CALLER}-01"
        assert wait_for(lambda: expected in plat.run("logs", "hello").stdout, timeout=15)
