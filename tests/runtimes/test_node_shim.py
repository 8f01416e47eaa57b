"""What only the Node.js shim has (ES modules, named exports, work a call starts that
outlives it); the contract it shares with the others is in test_shim_contract.py."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtimes import NODE_SHIM, ServerProcess, split_call_tag
from tests.runtimes.shims import NODE, NODE_KIND, call_with_ids, running, served, write_files

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
]


def test_shim_parses_on_node(tmp_path: Path) -> None:
    assert NODE is not None
    subprocess.run([NODE, "--check", str(NODE_SHIM)], check=True)


def test_handle_export_and_es_module(tmp_path: Path) -> None:
    folder = write_files(
        tmp_path / "esm",
        {
            "package.json": json.dumps({"name": "esm", "type": "module"}),
            "handler.js": "export async function handle(event) { return {esm: true}; }\n",
        },
    )
    with running(NODE_KIND, folder) as server:
        assert server.request("GET", "/").json() == {"esm": True}


def test_named_export_in_handler_spec(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "named", {"fn.js": "exports.greet = async () => 'hi';\n"})
    with running(NODE_KIND, folder, "fn.js:greet") as server:
        assert server.request("GET", "/").text == "hi"


# --- call ids on log lines -----------------------------------------------------------------

_IDS_IN_TEXT = re.compile(r"(?:who=|again=|id=)(\S+)")


@pytest.fixture(scope="module")
def logshim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from served(NODE_KIND, tmp_path_factory, NODE_KIND.log_handler)


def test_call_id_has_a_camel_case_alias(logshim: ServerProcess) -> None:
    def context(headers: dict[str, str]) -> Any:
        return logshim.request("GET", "/context", headers=headers).json()

    assert context({"X-Call-Id": "abc-123"})["callId"] == "abc-123"
    assert context({})["callId"] == ""
    assert context({"X-Call-Id": "no spaces/allowed"})["callId"] == ""


def test_work_started_by_a_call_stays_tagged(logshim: ServerProcess) -> None:
    assert logshim.request("GET", "/later?m=l1", headers={"X-Call-Id": "late-1"}).text == "ok"
    assert "[call:late-1] later l1" in logshim.wait_lines("later l1", 1)


def test_handler_stack_is_tagged(logshim: ServerProcess) -> None:
    resp = logshim.request("GET", "/boom?m=b1", headers={"X-Call-Id": "boom-1"})
    assert resp.status == 500
    stderr = logshim.wait_lines("RangeError: boom b1", 1, stream="stderr")
    first = stderr.index("[call:boom-1] plat-shim: the handler threw RangeError on GET /boom")
    assert stderr[first + 1] == "[call:boom-1] RangeError: boom b1"
    assert stderr[first + 2].startswith("[call:boom-1]     at ")
    assert "handler.js" in stderr[first + 2]


def test_concurrent_async_calls_tag_their_own_lines(logshim: ServerProcess) -> None:
    ids = [f"conc-{n}" for n in range(10)]
    # Two calls without a call id run among them.
    assert call_with_ids(logshim, "/whoami", ids) == [*ids, "none", "none"]
    lines = logshim.wait_lines("again=conc-", 30)
    pieces: dict[str | None, list[str]] = {}
    for line in lines:
        if not _IDS_IN_TEXT.search(line):
            continue
        call_id, text = split_call_tag(line)
        named = set(_IDS_IN_TEXT.findall(text))
        assert named == {call_id or "none"}, f"line tagged {call_id!r}: {line!r}"
        pieces.setdefault(call_id, []).extend(text.split())
    # Nothing is lost: each call's words are all there, under its own tag.
    for call_id in ids:
        words = sorted(pieces[call_id])
        expected = sorted(
            [*(f"{n}" for n in range(3)), *["before", f"id={call_id}"] * 3]
            + [f"who={call_id}", f"again={call_id}"] * 3
        )
        assert words == expected, call_id
