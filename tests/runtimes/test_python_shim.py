"""What only the Python shim has (threads for plain handlers, ``async def`` handlers,
logging, the import cost); the contract it shares with the others is in
test_shim_contract.py."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.runtimes import PYTHON_SHIM, ServerProcess, split_call_tag
from tests.runtimes.shims import PYTHON, call_with_ids, running, served

pytestmark = pytest.mark.timeout(60)

ASYNC_HANDLER = textwrap.dedent(
    """
    import asyncio


    async def handle(event, context):
        await asyncio.sleep(0.2)
        return {"async": True, "path": event.path}
    """
)

HANGING_HANDLER = textwrap.dedent(
    """
    import threading

    RELEASE = threading.Event()

    def handle(event, context):
        if event.path == "/hang":
            RELEASE.wait()
        return "done"
    """
)


def test_probe_says_busy_once_every_worker_is_stuck(tmp_path: Path) -> None:
    """Calls whose clients gave up keep their threads; once none is free, the probe
    says so (503 busy), so the daemon can replace the instance."""
    folder = PYTHON.write(tmp_path / "app", HANGING_HANDLER)
    with running(PYTHON, folder, PLAT_WORKERS="2") as server:
        probe = {"X-Plat-Probe": "1"}
        assert server.request("GET", "/", headers=probe).status == 200
        for _ in range(2):  # two callers that hang, then give up
            conn = server.connection()
            conn.timeout = 0.3
            conn.request("GET", "/hang")
            with pytest.raises(TimeoutError):
                conn.getresponse()
            conn.close()
        deadline = time.monotonic() + 5
        resp = server.request("GET", "/", headers=probe)
        while resp.status == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            resp = server.request("GET", "/", headers=probe)
        assert resp.status == 503
        assert resp.headers["x-plat-status"] == "busy"
        assert resp.json()["status"] == "busy"


def test_shim_import_leaves_out_email_utils() -> None:
    # email.utils costs ~12 ms of every cold start; the shim writes its Date itself.
    code = "import sys, plat_shim; print('email' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-P", "-S", "-c", code],
        cwd=PYTHON_SHIM.parent,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(PYTHON_SHIM.parent)},
    )
    assert out.stdout.strip() == "False"


def test_async_handler(tmp_path: Path) -> None:
    folder = PYTHON.write(tmp_path / "app", ASYNC_HANDLER, "fn.py")
    with running(PYTHON, folder, "fn.handle") as server:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda _: server.request("GET", "/a"), range(10)))
        assert all(r.json() == {"async": True, "path": "/a"} for r in results)
        assert time.monotonic() - started < 1.8


# --- call ids on log lines -----------------------------------------------------------------

ASYNC_LOG_HANDLER = textwrap.dedent(
    """
    import asyncio


    async def handle(event, context):
        me = context.call_id or "none"
        print(f"before id={me}")
        await asyncio.sleep(0.05)
        await asyncio.to_thread(print, f"thread id={me}")
        print(f"after id={me}")
        return me
    """
)

_IDS_IN_TEXT = re.compile(r"(?:who=|id[= ])(\S+)")
# The ids these tests give their calls (conc-3, async-1, boom-1): a word of an
# untagged call's output never looks like one, however its writes interleave.
_GIVEN_ID = re.compile(r"[a-z]+-\d+")


def check_own_tags(lines: list[str], *markers: str) -> list[tuple[str | None, str]]:
    """(tag, text) of the lines containing a marker, after checking that a tagged line
    names only its own call, and an untagged one no call that has an id.

    Untagged output of concurrent calls may interleave as it always could (two
    ``print("n", n, "id", me)`` at once can make ``nn 2 2  id id nonenone``); only
    complete lines of calls with an id are promised to stay whole.
    """
    found = []
    for line in lines:
        if not any(marker in line for marker in markers):
            continue
        call_id, text = split_call_tag(line)
        if call_id is None:
            assert not _GIVEN_ID.search(text), f"untagged: {line!r}"
        else:
            named = set(_IDS_IN_TEXT.findall(text))
            assert named == {call_id}, f"line tagged {call_id!r}: {line!r}"
        found.append((call_id, text))
    return found


def test_the_tag_check_allows_untagged_calls_interleaving_only_with_each_other() -> None:
    # Seen when two untagged calls printed at once: their words interleaved.
    assert check_own_tags(["nn 2 2  id id nonenone"], " id ") == [(None, "nn 2 2  id id nonenone")]
    with pytest.raises(AssertionError, match="untagged"):
        check_own_tags(["who=none n 1 id conc-4"], " id ")
    with pytest.raises(AssertionError, match="tagged 'conc-1'"):
        check_own_tags(["[call:conc-1] who=conc-1 n 0 id conc-2"], " id ")


@pytest.fixture(scope="module")
def logshim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from served(PYTHON, tmp_path_factory, PYTHON.log_handler)


def test_logging_during_a_call_is_tagged(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/logging?m=l1", headers={"X-Call-Id": "log-1"}).text == "ok"
    stderr = logshim.wait_lines("last resort l1", 1, stream="stderr")
    assert "[call:log-1] WARNING configured l1" in stderr
    assert "[call:log-1] last resort l1" in stderr


def test_handler_traceback_is_tagged(logshim: ServerProcess) -> None:
    resp = logshim.request("GET", "/boom?m=b1", headers={"X-Call-Id": "boom-1"})
    assert resp.status == 500
    stderr = logshim.wait_lines("ValueError: boom b1", 1, stream="stderr")
    first = stderr.index("[call:boom-1] plat-shim: the handler raised ValueError on GET /boom")
    last = stderr.index("[call:boom-1] ValueError: boom b1")
    report = stderr[first : last + 1]
    assert "[call:boom-1] Traceback (most recent call last):" in report
    assert len(report) >= 4
    assert all(split_call_tag(line)[0] == "boom-1" for line in report), report


def test_concurrent_sync_calls_tag_their_own_lines(logshim: ServerProcess) -> None:
    ids = [f"conc-{n}" for n in range(10)]
    # Two calls without a call id run among them.
    assert call_with_ids(logshim, "/whoami", ids) == [*ids, "none", "none"]
    lines = logshim.wait_lines("who=conc-", 30)
    # The untagged calls' partial lines may be cut by tagged lines (and their rest go on
    # a line of its own); the lines of the tagged calls stay whole.
    found = check_own_tags(lines, "who=", " id ")
    for call_id in ids:
        mine = sorted(text for tag, text in found if tag == call_id)
        assert mine == [f"who={call_id} n {n} id {call_id}" for n in range(3)]


def test_stream_attributes_are_the_real_streams(logshim: ServerProcess) -> None:
    data = logshim.request("GET", "/streams", headers={"X-Call-Id": "s-1"}).json()
    assert data["stdout"]["fileno"] == 1
    assert data["stderr"]["fileno"] == 2
    assert data["stdout"]["isatty"] is False
    assert data["stdout"]["buffer"] is True
    assert data["stdout"]["encoding"]


def test_async_handler_calls_tag_their_own_lines(tmp_path: Path) -> None:
    with running(PYTHON, PYTHON.write(tmp_path / "app", ASYNC_LOG_HANDLER)) as server:
        ids = [f"async-{n}" for n in range(10)]
        assert call_with_ids(server, "/", ids) == [*ids, "none", "none"]
        lines = server.wait_lines("after id=async-", 10)
        assert lines[0].startswith("plat-shim: python ")
        found = check_own_tags(lines, "id=")
        for call_id in ids:
            texts = sorted(text for tag, text in found if tag == call_id)
            assert texts == [f"after id={call_id}", f"before id={call_id}", f"thread id={call_id}"]
