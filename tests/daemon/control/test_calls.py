"""GET /v1/calls, GET /v1/calls/{id} and POST /v1/calls/{id}/retry against a real
daemon on the process backend: calls queued with POST /async-function/ and run
through the gateway, read back through both doors (the unix socket, and /api on
the gateway port with a token), with hostile parameters, tenants, concurrent
retries, and the queue's metrics as Prometheus and promtool read them."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.commands.remote import create_tenant, process_daemon
from tests.fixtures import PlatRunner, wait_for
from tests.functions import write_python_function

HANDLER = """
import json, time

def handle(event, context):
    query = dict(event.query)
    time.sleep(float(query.get("sleep", "0")))
    if "binary" in query:
        return bytes(range(256))
    if "big" in query:
        return "x" * int(query["big"])
    return {
        "statusCode": int(query.get("status", "200")),
        "headers": {"X-Seen-Call": event.headers.get("x-call-id", "")},
        "body": {
            "body": event.body.decode(),
            "path": event.path,
            "attempt": event.headers.get("x-plat-attempt"),
            "trigger": event.headers.get("x-plat-trigger"),
        },
    }
"""
QUICK = "async: {retries: 2, backoff: 100ms, max_backoff: 200ms}\n"
FINISHED = ("done", "failed", "dead")


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
    """The control API of one daemon through either door, and its async door."""

    def __init__(self, plat: PlatRunner) -> None:
        self.plat = plat
        self.admin = plat.run("auth", "token").stdout.strip()
        assert self.admin

    def http(
        self, method: str, path: str, token: str | None = None, tenant: str | None = None
    ) -> tuple[int, Any]:
        """``path`` (/v1/...) on the gateway's /api door with ``token`` (the admin's
        by default)."""
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        if tenant:
            headers["X-Plat-Tenant"] = tenant
        result = self.plat.http(method, "/api" + path, headers=headers, auth=False, body=None)
        return result.status, json.loads(result.body)

    def socket(self, method: str, path: str) -> tuple[int, Any]:
        conn = UnixConnection(self.plat.home / "run" / "plat.sock")
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def queue(
        self, target: str, body: bytes = b"", token: str | None = None, **headers: str
    ) -> str:
        """POST /async-function/<target>: the call's id."""
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        result = self.plat.http(
            "POST", f"/async-function/{target}", body=body, headers=headers, auth=token is None
        )
        assert result.status == 202, result.body
        call_id = json.loads(result.body)["call_id"]
        assert isinstance(call_id, str)
        return call_id

    def finished(self, call_id: str, timeout: float = 30) -> dict[str, Any]:
        """The call once it is done, failed or dead."""
        seen: dict[str, Any] = {}

        def over() -> bool:
            status, seen["call"] = self.socket("GET", f"/v1/calls/{call_id}")
            return status == 200 and seen["call"]["state"] in FINISHED

        assert wait_for(over, timeout=timeout), seen
        call: dict[str, Any] = seen["call"]
        return call


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("calls")) as runner:
        runner.run(
            "deploy",
            str(
                write_python_function(
                    tmp_path_factory.mktemp("fn"), "work", HANDLER, extra_manifest=QUICK
                )
            ),
        )
        yield runner


@pytest.fixture(scope="module")
def api(plat: PlatRunner) -> Api:
    return Api(plat)


def test_a_finished_call_reads_the_same_through_both_doors(api: Api) -> None:
    call_id = api.queue("work/orders?x=1", b'{"job": 1}', **{"X-Test": "kept"})
    call = api.finished(call_id)
    assert call["state"] == "done" and call["status"] == 200 and call["attempts"] == 1
    assert (call["function"], call["tenant"], call["trigger"]) == ("work", "default", "async")
    assert (call["method"], call["target"]) == ("POST", "/orders?x=1")
    assert call["callback_url"] is None and call["callback_state"] is None
    assert call["finished_at"] >= call["created_at"] and call["duration"] > 0
    (attempt,) = call["attempts_detail"]
    assert attempt["attempt"] == 1 and attempt["status"] == 200 and attempt["error"] is None
    response = call["response"]
    assert response["status"] == 200 and "encoding" not in response
    assert json.loads(response["body"]) == {
        "body": '{"job": 1}',
        "path": "/orders",
        "attempt": "1",
        "trigger": "async",
    }
    assert ["X-Seen-Call", call_id] in response["headers"]

    status, through_http = api.http("GET", f"/v1/calls/{call_id}")
    assert status == 200 and through_http == call
    status, listed = api.socket("GET", "/v1/calls?function=work")
    status_http, listed_http = api.http("GET", "/v1/calls?function=work")
    assert status == status_http == 200
    (row,) = [r for r in listed["calls"] if r["id"] == call_id]
    assert row == {k: call[k] for k in row}
    assert set(row) == {
        "id", "function", "tenant", "state", "trigger", "attempts", "status",
        "created_at", "finished_at", "duration", "callback_state", "error",
    }  # fmt: skip
    assert [r["id"] for r in listed_http["calls"]] == [r["id"] for r in listed["calls"]]


def test_a_4xx_fails_at_once_and_5xx_is_retried_until_dead(api: Api) -> None:
    failed = api.finished(api.queue("work?status=404"))
    assert (failed["state"], failed["status"], failed["attempts"]) == ("failed", 404, 1)
    dead = api.finished(api.queue("work?status=503"))
    assert (dead["state"], dead["status"], dead["attempts"]) == ("dead", 503, 3)
    assert [a["attempt"] for a in dead["attempts_detail"]] == [1, 2, 3]
    assert all(a["status"] == 503 for a in dead["attempts_detail"])
    starts = [a["started_at"] for a in dead["attempts_detail"]]
    assert all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(starts))  # backoff
    assert json.loads(dead["response"]["body"])["attempt"] == "3"


def test_the_list_filters_by_state_and_limit_newest_first(api: Api) -> None:
    ids = [api.queue(f"work?n={n}") for n in range(3)]
    for call_id in ids:
        api.finished(call_id)
    dead = api.finished(api.queue("work?status=500"))
    _, newest = api.socket("GET", "/v1/calls?function=work&limit=3")
    assert [r["id"] for r in newest["calls"]] == [dead["id"], *reversed(ids[1:])]
    _, only_dead = api.socket("GET", "/v1/calls?function=work&state=dead&limit=1000")
    assert only_dead["calls"] and {r["state"] for r in only_dead["calls"]} == {"dead"}
    assert dead["id"] in [r["id"] for r in only_dead["calls"]]
    _, queued = api.socket("GET", "/v1/calls?function=work&state=queued")
    assert all(r["state"] == "queued" for r in queued["calls"])


def test_answers_that_are_not_text_come_back_in_base64(api: Api) -> None:
    binary = api.finished(api.queue("work?binary=1"))["response"]
    assert binary["encoding"] == "base64"
    assert base64.b64decode(binary["body"]) == bytes(range(256))
    big = api.finished(api.queue("work?big=200000"))["response"]
    assert "encoding" not in big and set(big["body"]) == {"x"}
    assert len(big["body"]) <= 64 * 1024  # what the store keeps


def test_retry_queues_a_dead_call_again_with_fresh_retries(api: Api) -> None:
    dead = api.finished(api.queue("work?status=503"))
    status, again = api.http("POST", f"/v1/calls/{dead['id']}/retry")
    assert status == 200, again
    assert again["id"] == dead["id"] and again["state"] in ("queued", "running")
    assert again["finished_at"] is None and again["error"] is None
    after = api.finished(dead["id"])
    assert after["state"] == "dead" and after["attempts"] == 6
    assert [a["attempt"] for a in after["attempts_detail"]] == [1, 2, 3, 4, 5, 6]
    assert json.loads(after["response"]["body"])["attempt"] == "6"  # the same call, again


def test_only_dead_or_failed_calls_can_be_retried(api: Api) -> None:
    done = api.finished(api.queue("work"))
    status, body = api.socket("POST", f"/v1/calls/{done['id']}/retry")
    assert status == 409 and body["error"] == "call_not_retryable"
    assert "is done" in body["message"]
    slow = api.queue("work?sleep=1")
    status, body = api.socket("POST", f"/v1/calls/{slow}/retry")
    assert status == 409 and body["error"] == "call_not_retryable"
    assert api.finished(slow)["attempts"] == 1
    failed = api.finished(api.queue("work?status=400"))
    status, body = api.socket("POST", f"/v1/calls/{failed['id']}/retry")
    assert status == 200 and body["state"] in ("queued", "running")
    assert api.finished(failed["id"])["attempts"] == 2  # a 4xx is not retried by the queue


def test_concurrent_retries_of_one_call_requeue_it_once(api: Api) -> None:
    dead = api.finished(api.queue("work?status=503"))

    def retry(_: int) -> int:
        return api.http("POST", f"/v1/calls/{dead['id']}/retry")[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(retry, range(16)))
    assert sorted(statuses) == [200] + [409] * 15
    after = api.finished(dead["id"])
    assert [a["attempt"] for a in after["attempts_detail"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("state=bogus", "bad state"),
        ("state=DONE", "bad state"),
        ("limit=0", "bad limit"),
        ("limit=-1", "bad limit"),
        ("limit=1001", "bad limit"),
        ("limit=abc", "bad limit"),
        ("limit=1e3", "bad limit"),
        ("limit=" + "9" * 5000, "bad limit"),
        ("limit=%EF%BC%91", "bad limit"),  # a fullwidth digit one
    ],
)
def test_bad_parameters_are_400s_that_quote_them_short(api: Api, query: str, says: str) -> None:
    for status, body in (
        api.socket("GET", f"/v1/calls?{query}"),
        api.http("GET", f"/v1/calls?{query}"),
    ):
        assert status == 400 and says in body["message"], body
        assert len(body["message"]) < 300


@pytest.mark.parametrize(
    ("call_id", "expected"),
    [
        ("x" * 129, 400),
        ("a%00b", 400),
        ("caf%C3%A9", 400),
        ("a%20b", 400),
        ("a.b-c_D", 404),  # a valid id that names no call
        ("00000000000000000000000000000000", 404),
    ],
)
def test_malformed_and_unknown_call_ids(api: Api, call_id: str, expected: int) -> None:
    for method, path in (("GET", f"/v1/calls/{call_id}"), ("POST", f"/v1/calls/{call_id}/retry")):
        status, body = api.socket(method, path)
        assert status == expected, (method, body)
        assert body["error"] == ("bad_request" if expected == 400 else "not_found")


def test_unknown_functions_are_404_and_kept_calls_outlive_their_function(
    api: Api, tmp_path: Path
) -> None:
    for name in ("nope", "../work", "work.acme"):
        status, body = api.socket("GET", f"/v1/calls?function={name}")
        assert status == 404 and body["error"] == "not_found", name
    api.plat.run(
        "deploy", str(write_python_function(tmp_path, "gone", HANDLER, extra_manifest=QUICK))
    )
    dead = api.finished(api.queue("gone?status=500"))
    api.plat.run("rm", "gone")
    status, body = api.socket("GET", "/v1/calls?function=gone")
    assert status == 200 and [r["id"] for r in body["calls"]] == [dead["id"]]
    status, body = api.socket("POST", f"/v1/calls/{dead['id']}/retry")
    assert status == 409 and "no longer deployed" in body["message"]


def test_a_tenant_sees_and_retries_only_its_own_calls(api: Api, tmp_path: Path) -> None:
    plat = api.plat
    acme, beta = create_tenant(plat, "acme"), create_tenant(plat, "beta")
    folder = write_python_function(tmp_path, "work", HANDLER, extra_manifest=QUICK)
    plat.run("--tenant", "acme", "deploy", str(folder))
    theirs = api.finished(api.queue("work.acme?status=503", token=acme))
    ours = api.finished(api.queue("work?status=503"))
    assert theirs["tenant"] == "acme" and theirs["function"] == "work"

    status, listed = api.http("GET", "/v1/calls", token=acme)
    assert status == 200 and [r["id"] for r in listed["calls"]] == [theirs["id"]]
    status, listed = api.http("GET", "/v1/calls?function=work", token=acme)
    assert [r["id"] for r in listed["calls"]] == [theirs["id"]]
    assert api.http("GET", f"/v1/calls/{ours['id']}", token=acme)[0] == 404

    status, listed = api.http("GET", "/v1/calls", token=beta)
    assert status == 200 and listed["calls"] == []
    assert api.http("GET", "/v1/calls?function=work", token=beta)[0] == 404
    for method, path in (("GET", ""), ("POST", "/retry")):
        status, body = api.http(method, f"/v1/calls/{theirs['id']}{path}", token=beta)
        assert status == 404 and body["error"] == "not_found"
    status, body = api.http("GET", "/v1/calls", token=beta, tenant="acme")
    assert status == 404 and body["error"] == "no_tenant"

    # The admin: every tenant's calls without X-Plat-Tenant, one tenant's with it.
    _, every = api.socket("GET", "/v1/calls?limit=1000")
    assert {theirs["id"], ours["id"]} <= {r["id"] for r in every["calls"]}
    _, chosen = api.http("GET", "/v1/calls", tenant="acme")
    assert [r["id"] for r in chosen["calls"]] == [theirs["id"]]
    assert api.http("GET", f"/v1/calls/{ours['id']}", tenant="acme")[0] == 404

    status, again = api.http("POST", f"/v1/calls/{theirs['id']}/retry", token=acme)
    assert status == 200 and again["tenant"] == "acme"
    assert api.finished(theirs["id"])["attempts"] == 6


def metrics(plat: PlatRunner) -> dict[tuple[str, str], float]:
    """The plat_async_* samples of /metrics: (name, function) -> value."""
    text = plat.http("GET", "/metrics").body.decode()
    return {
        (s.name, s.labels["function"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("plat_async_")
    }


def test_queue_metrics_show_waiting_running_and_age_and_pass_promtool(
    api: Api, tmp_path: Path
) -> None:
    plat = api.plat
    scale = "scale: {min: 1, max: 1, concurrency: 1}\n"  # one queued call at a time
    plat.run("deploy", str(write_python_function(tmp_path, "slow", HANDLER, extra_manifest=scale)))
    ids = [api.queue("slow?sleep=1.5") for _ in range(3)]
    assert wait_for(lambda: metrics(plat).get(("plat_async_running", "slow")) == 1, timeout=10)
    seen = metrics(plat)
    assert seen[("plat_async_queue_depth", "slow")] == 2
    assert 0 < seen[("plat_async_queue_oldest_seconds", "slow")] < 30
    body = plat.http("GET", "/metrics").body
    for family in text_string_to_metric_families(body.decode()):
        if family.name.startswith("plat_async_"):
            assert {s.labels["tenant"] for s in family.samples} == {"default"}
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's prometheus)")
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == b"", proc
    for call_id in ids:
        api.finished(call_id)
    assert wait_for(lambda: ("plat_async_running", "slow") not in metrics(plat), timeout=10)
    assert ("plat_async_queue_depth", "slow") not in metrics(plat)


def test_the_functions_list_has_the_next_cron_run(api: Api, tmp_path: Path) -> None:
    plat = api.plat
    yearly = 'schedule: ["0 0 1 1 *", "30 12 * * *"]\n'
    plat.run(
        "deploy", str(write_python_function(tmp_path, "yearly", HANDLER, extra_manifest=yearly))
    )
    _, functions = api.socket("GET", "/v1/functions")
    by_name = {f["name"]: f for f in functions if f["tenant"] == "default"}
    assert by_name["work"]["next_run"] is None
    now = time.time()
    next_run = by_name["yearly"]["next_run"]
    assert now < next_run <= now + 86400
    assert time.gmtime(next_run)[3:6] == (12, 30, 0) or time.gmtime(next_run)[1:6] == (
        1,
        1,
        0,
        0,
        0,
    )
