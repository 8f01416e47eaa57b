"""Function logs, call ids, invocation records and stats against a real daemon and Podman."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner, daemon_session, make_runner, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container

CHATTY = """
import sys

print("loaded", flush=True)

def handle(event, context):
    print("call on", event.path)
    sys.stderr.write("warn " + event.path + "\\n")
    return "ok"
"""

FLOOD = """
import threading, time

def _flood():
    line = "x" * 200
    end = time.monotonic() + 5
    while time.monotonic() < end:
        print(line)

threading.Thread(target=_flood, daemon=True).start()

def handle(event, context):
    return "ok"
"""


@pytest.fixture(scope="module")
def logplat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatRunner, Path]]:
    root = tmp_path_factory.mktemp("logs")
    runner = make_runner(root)
    runner.env["PLAT_LOG_LINES"] = "200"
    runner.env["PLAT_LOG_TRIM_INTERVAL"] = "1s"
    with daemon_session(runner):
        yield runner, root


def _logs(plat: PlatRunner, *args: str) -> list[dict[str, object]]:
    out = plat.run("logs", *args, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_follow_shows_lines_live_with_call_id(logplat: tuple[PlatRunner, Path]) -> None:
    plat, root = logplat
    plat.run("deploy", str(write_python_function(root, "chatty", CHATTY)))
    follower = subprocess.Popen(
        [sys.executable, "-m", "plat", "logs", "chatty", "-f", "--json"],
        env=plat.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, object]] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Start-up output is there from the first line.
        assert wait_for(lambda: any(s["line"] == "loaded" for s in seen), timeout=20)
        res = plat.http("GET", "/function/chatty/live-1", headers={"X-Call-Id": "live-call-1"})
        assert res.status == 200
        assert res.headers["X-Call-Id"] == "live-call-1"
        assert wait_for(lambda: any(s["line"] == "call on /live-1" for s in seen), timeout=20)
        line = next(s for s in seen if s["line"] == "call on /live-1")
        assert line["stream"] == "stdout"
        assert line["call_id"] == "live-call-1"
        err = next((s for s in seen if s["line"] == "warn /live-1"), None)
        assert err is not None
        assert err["stream"] == "stderr"
        # A redeploy: the follower keeps going with the new instance's lines.
        folder = root / "chatty"
        (folder / "handler.py").write_text(CHATTY.replace("call on", "v2 call on"))
        plat.run("deploy", str(folder))
        plat.http("GET", "/function/chatty/after")
        assert wait_for(lambda: any(s["line"] == "v2 call on /after" for s in seen), timeout=20)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
        assert follower.stdout is not None
        follower.stdout.close()
    # A generated call id comes back when the client sent none (or an invalid one).
    res = plat.http("GET", "/function/chatty/x", headers={"X-Call-Id": "bad id!"})
    assert res.headers["X-Call-Id"] != "bad id!"
    assert len(res.headers["X-Call-Id"]) == 32


def test_logs_survive_a_restart_and_filters_work(logplat: tuple[PlatRunner, Path]) -> None:
    plat, root = logplat
    plat.run("deploy", str(write_python_function(root, "keep", CHATTY)))
    plat.http("GET", "/function/keep/before-restart")
    assert wait_for(
        lambda: any(s["line"] == "call on /before-restart" for s in _logs(plat, "keep")),
        timeout=20,
    )
    plat.run("daemon", "stop")
    plat.run("daemon", "start")
    lines = _logs(plat, "keep")
    assert any(s["line"] == "call on /before-restart" for s in lines)
    # Lines are never stored twice, whatever the restarts.
    ids = [s["id"] for s in lines]
    assert len(ids) == len(set(ids))
    assert len(_logs(plat, "keep", "--tail", "2")) == 2
    instance = str(lines[-1]["instance"])
    assert all(s["instance"] == instance for s in _logs(plat, "keep", "--instance", instance[:6]))
    assert _logs(plat, "keep", "--since", "1h")
    build = plat.run("logs", "keep", "--build").stdout
    assert "STEP" in build or "up to date" in build
    bad = plat.run("logs", "keep", "--since", "soon", check=False)
    assert bad.returncode == 1
    assert "since" in bad.stderr


def test_stats_and_records(logplat: tuple[PlatRunner, Path]) -> None:
    plat, root = logplat
    plat.run("deploy", str(write_python_function(root, "counted", CHATTY)))
    for i in range(10):
        assert plat.http("GET", f"/function/counted/{i}").status == 200
    plat.http("GET", "/function/counted", auth=False)  # 401 counts as a call
    data = json.loads(plat.run("stats", "counted", "--json").stdout)
    (fn,) = data["functions"]
    assert fn["function"] == "counted"
    assert fn["invocations"] == 11
    assert fn["client_errors"] == 1
    assert fn["errors"] == 0
    assert 0 < fn["p50"] <= fn["p95"] <= fn["p99"]
    table = plat.run("stats").stdout
    assert "counted" in table
    assert "P99" in table


def test_retention_trims_and_a_log_storm_starves_nobody(logplat: tuple[PlatRunner, Path]) -> None:
    plat, root = logplat
    plat.run("deploy", str(write_python_function(root, "flood", FLOOD)))
    plat.run("deploy", str(write_python_function(root, "quiet", CHATTY)))
    results: list[int] = []

    def call(i: int) -> int:
        return plat.http("GET", f"/function/quiet/{i}").status

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(200)))
    elapsed = time.monotonic() - started
    assert results == [200] * 200
    assert elapsed < 60
    # Once the flood is over, the trimmer brings it down to the retention (200 lines).
    assert wait_for(lambda: len(_logs(plat, "flood")) <= 201, timeout=30)
    # The quiet function's lines made it: of what its retention keeps (its stdout and
    # stderr lines interleave; the newest 150 alone could be mostly one stream).
    quiet = [s["line"] for s in _logs(plat, "quiet")]
    assert sum(1 for line in quiet if str(line).startswith("call on /")) >= 60
