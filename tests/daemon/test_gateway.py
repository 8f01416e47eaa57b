"""The gateway's contract over real HTTP: auth, pass-through and every JSON error."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, daemon_session, make_runner, wait_for
from tests.functions import CRASH, ECHO, HANG, SLOW, write_python_function

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatRunner, Path]]:
    root = tmp_path_factory.mktemp("gw")
    runner = make_runner(root)
    runner.env["PLAT_MAX_BODY"] = "64Ki"
    with daemon_session(runner):
        fns = root / "fns"
        echo = write_python_function(fns, "echo", ECHO, extra_manifest="auth: public\n")
        slow = write_python_function(fns, "slow", SLOW, extra_manifest="timeout: 1s\n")
        runner.run("deploy", str(echo))
        runner.run("deploy", str(slow))
        runner.run("deploy", str(write_python_function(fns, "crash", CRASH)))
        hang = write_python_function(
            fns,
            "hang",
            HANG,
            extra_manifest="""\
            timeout: 1s
            env: {PLAT_WORKERS: "2"}
            scale: {min: 1, max: 1, concurrency: 2}
            """,
        )
        runner.run("deploy", str(hang))
        yield runner, fns


def test_unknown_function_is_404_json(gw: tuple[PlatRunner, Path]) -> None:
    plat, _ = gw
    res = plat.http("GET", "/function/missing")
    assert res.status == 404
    assert res.headers["Content-Type"].startswith("application/json")
    body = res.json()
    assert body["error"] == "not_found"  # type: ignore[index]
    assert "missing" in body["message"]  # type: ignore[index]


def test_public_function_needs_no_auth_and_passes_everything(gw: tuple[PlatRunner, Path]) -> None:
    plat, _ = gw
    res = plat.http("DELETE", "/function/echo/x/y?a=1&b=2", b"data", {"X-Test": "t"}, auth=False)
    assert res.status == 200
    body = res.json()
    assert body["method"] == "DELETE"  # type: ignore[index]
    assert body["path"] == "/x/y"  # type: ignore[index]
    assert body["query"] == {"a": "1", "b": "2"}  # type: ignore[index]
    assert body["body"] == "data"  # type: ignore[index]
    assert body["x_test"] == "t"  # type: ignore[index]


def test_body_over_limit_is_413(gw: tuple[PlatRunner, Path]) -> None:
    plat, _ = gw
    big = b"x" * (64 * 1024 + 1)
    res = plat.http("POST", "/function/echo", big, auth=False)
    assert res.status == 413
    assert res.json()["error"] == "body_too_large"  # type: ignore[index]
    # A chunked body of unknown length is bounded too.
    conn = http.client.HTTPConnection("127.0.0.1", plat.port, timeout=30)
    conn.putrequest("POST", "/function/echo")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for _ in range(20):
        chunk = b"y" * 8192
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    ok = plat.http("POST", "/function/echo", b"z" * 60_000, auth=False)
    assert ok.status == 200
    assert len(ok.json()["body"]) == 60_000  # type: ignore[index]


def test_timeout_is_504(gw: tuple[PlatRunner, Path]) -> None:
    plat, _ = gw
    res = plat.http("GET", "/function/slow")
    assert res.status == 504
    assert res.json()["error"] == "function_timeout"  # type: ignore[index]


def test_handler_exception_is_500_without_traceback(gw: tuple[PlatRunner, Path]) -> None:
    plat, _ = gw
    res = plat.http("GET", "/function/crash/raise")
    assert res.status == 500
    assert b"Traceback" not in res.body
    assert b"boom" not in res.body


def test_dead_instance_is_502_then_replaced(gw: tuple[PlatRunner, Path]) -> None:
    plat, _ = gw
    assert plat.http("GET", "/function/crash").body == b"alive"
    before = plat.instances_of("crash", "status=running")
    res = plat.http("GET", "/function/crash/die")
    assert res.status == 502
    assert res.json()["error"] == "instance_failed"  # type: ignore[index]

    def replaced() -> bool:
        now = plat.instances_of("crash", "status=running")
        return len(now) == 1 and now != before

    assert wait_for(replaced, timeout=30)
    assert wait_for(lambda: plat.http("GET", "/function/crash").body == b"alive", timeout=30)


def test_an_instance_wedged_by_hung_handlers_is_replaced(gw: tuple[PlatRunner, Path]) -> None:
    """Calls that hang use up the shim's threads; the instance still answers its
    probe. After the timeouts it is found busy and replaced, and calls work again."""
    plat, _ = gw
    assert plat.http("GET", "/function/hang").body == b"alive"
    before = plat.instances_of("hang", "status=running")
    for _ in range(3):  # two use up the threads, the third finds none free
        res = plat.http("GET", "/function/hang/hang")
        # 502 when the wedged instance is stopped under the call
        assert res.status in (502, 504), res
        assert res.json()["error"] in ("function_timeout", "instance_failed")  # type: ignore[index]

    def serving_again() -> bool:
        return plat.http("GET", "/function/hang").body == b"alive"

    assert wait_for(serving_again, timeout=20)
    assert plat.instances_of("hang", "status=running") != before
    log = (plat.home / "daemon.log").read_text()
    assert "has every worker stuck in calls that outran their timeout" in log
