"""`plat calls`, `plat call` (and --retry) and the NEXT RUN column of `plat ls`: the
cells and lines on hand-written calls (states, tenants, hostile answers, binary and
large bodies), arguments refused before any request, and the real commands
against a real daemon on the process backend, as the admin and as a tenant."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from plat.api import CallDetail, CallSummary
from plat.commands.calls import (
    body_lines,
    calls_table,
    detail_lines,
    list_cells,
    parse_call_id,
    parse_state,
)
from plat.errors import PlatError
from tests.commands.remote import create_tenant, process_daemon, remote
from tests.fixtures import PlatRunner, make_runner, wait_for
from tests.functions import write_python_function

NOW = 1_800_000_000.0


def summary(**changes: Any) -> CallSummary:
    row: CallSummary = {
        "id": "88b7a9b4c60249540000000000000001",
        "function": "work",
        "tenant": "default",
        "state": "done",
        "trigger": "async",
        "attempts": 1,
        "status": 200,
        "created_at": NOW - 75,
        "finished_at": NOW - 74,
        "duration": 0.0123,
        "callback_state": None,
        "error": None,
    }
    row.update(changes)  # type: ignore[typeddict-item]
    return row


def detail(**changes: Any) -> CallDetail:
    call: CallDetail = {
        **summary(),
        "method": "POST",
        "target": "/orders?x=1",
        "callback_url": None,
        "callback_attempts": 0,
        "callback_status": None,
        "attempts_detail": [
            {"attempt": 1, "started_at": NOW - 75, "duration": 0.0123, "status": 200, "error": None}
        ],
        "response": {"status": 200, "headers": [], "body": '{"ok": true}'},
    }
    call.update(changes)  # type: ignore[typeddict-item]
    return call


def plain(markup: list[str]) -> str:
    console = Console(width=200, record=True, color_system=None)
    for line in markup:
        console.print(line, highlight=False)
    return console.export_text()


# -- cells and lines ------------------------------------------------------------------


def test_one_function_of_the_default_tenant_has_no_function_or_tenant_column() -> None:
    headers, cells = list_cells([summary(), summary(id="b", state="dead", status=503)], NOW)
    assert headers == [
        "ID", "STATE", "TRIGGER", "ATTEMPTS", "STATUS", "AGE", "DURATION", "CALLBACK",
    ]  # fmt: skip
    assert cells[0][:2] == ["88b7a9b4c60249540000000000000001", "[green]done[/green]"]
    assert cells[1][1:5] == ["[red]dead[/red]", "async", "1", "503"]
    assert cells[0][5:] == ["1m", "12 ms", "-"]


def test_several_functions_and_tenants_get_their_columns() -> None:
    rows = [summary(), summary(function="tick", tenant="acme", trigger="cron")]
    headers, cells = list_cells(rows, NOW)
    assert headers[:3] == ["ID", "FUNCTION", "TENANT"]
    assert cells[1][1:5] == ["tick", "acme", "[green]done[/green]", "cron"]


def test_every_state_and_callback_state_has_its_colour() -> None:
    states = {"queued": "cyan", "running": "blue", "done": "green", "failed": "yellow"}
    for state, colour in states.items():
        assert list_cells([summary(state=state)], NOW)[1][0][1] == f"[{colour}]{state}[/{colour}]"
    for state, colour in (("delivered", "green"), ("pending", "cyan"), ("failed", "red")):
        assert list_cells([summary(callback_state=state)], NOW)[1][0][-1] == (
            f"[{colour}]{state}[/{colour}]"
        )


def test_a_call_without_an_answer_yet_shows_dashes() -> None:
    (cells,) = list_cells([summary(state="queued", status=None, duration=None)], NOW)[1]
    assert cells[4] == "-" and cells[6] == "-"


def test_a_narrow_terminal_lists_whole_ids_on_lines_of_their_own() -> None:
    rows = [summary(), summary(id="x" * 128)]
    console = Console(width=60, record=True, color_system=None)
    console.print(calls_table(rows, NOW, 60))
    lines = console.export_text().splitlines()
    assert lines[0] == rows[0]["id"] and lines[2] == "x" * 60
    wide = Console(width=200, record=True, color_system=None)
    wide.print(calls_table(rows, NOW, 200))
    assert "x" * 128 in wide.export_text()  # a table never cuts an id


def test_the_detail_shows_attempts_callback_error_and_body() -> None:
    call = detail(
        state="dead",
        status=503,
        attempts=2,
        error="upstream said no",
        callback_url="http://127.0.0.1:9/hook",
        callback_state="failed",
        callback_attempts=5,
        callback_status=500,
        attempts_detail=[
            {"attempt": 1, "started_at": NOW - 75, "duration": 0.01, "status": 503, "error": None},
            {
                "attempt": 2,
                "started_at": NOW - 73,
                "duration": None,
                "status": None,
                "error": "interrupted: the daemon stopped",
            },
        ],
        response={"status": 503, "headers": [], "body": "busy"},
    )
    text = plain(detail_lines(call, NOW))
    assert text.splitlines()[0] == f"call {call['id']} of work  dead"
    assert "request   POST /orders?x=1" in text
    assert "callback  http://127.0.0.1:9/hook: failed after 5 tries, answered 500" in text
    assert "error     upstream said no" in text
    assert "#1   " in text and "+2.0s" in text and "interrupted: the daemon stopped" in text
    assert "response 503\nbusy" in text


def test_a_requeued_call_calls_its_answer_the_last_one() -> None:
    text = plain(detail_lines(detail(state="queued"), NOW))
    assert "last response 200" in text
    assert "(acme)" in plain(detail_lines(detail(tenant="acme"), NOW))


def test_hostile_answers_cannot_drive_the_terminal() -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07[bold]x[/bold]\rline\u2028end\nnext\tcol"
    call = detail(
        error="\x1b[31mred",
        target="/\x1b[H",
        response={"status": 200, "headers": [], "body": hostile},
    )
    text = plain(detail_lines(call, NOW))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "[bold]x[/bold]" in text  # markup in an answer is shown, not applied
    assert "end\nnext" in text  # newlines kept (rich expands the tab)


def test_bodies_too_large_or_not_text_are_described_not_printed() -> None:
    assert body_lines({"status": 200, "headers": [], "body": ""}) == ["[dim](empty body)[/dim]"]
    big = body_lines({"status": 200, "headers": [], "body": "é" * 3000})
    assert big == ["[dim](6000 bytes: `--json` shows them)[/dim]"]
    binary = body_lines({"status": 200, "headers": [], "body": "AAEC", "encoding": "base64"})
    assert binary == ["[dim](3 bytes, not UTF-8 text: `--json` shows them in base64)[/dim]"]


@pytest.mark.parametrize("raw", ["", "a b", "x" * 129, "a/b", "caf\u00e9", "a\x00", "../x"])
def test_a_malformed_call_id_is_refused(raw: str) -> None:
    with pytest.raises(PlatError, match="is not a call id"):
        parse_call_id(raw)


def test_states_are_checked_in_either_case() -> None:
    assert parse_state("DEAD") == "dead" and parse_state(None) is None
    with pytest.raises(PlatError, match="give one of queued, running, done, failed, dead"):
        parse_state("finished")


def test_refused_arguments_reach_no_daemon(tmp_path: Path) -> None:
    plat = make_runner(tmp_path)
    for args, says in (
        (("call", "a/b"), "is not a call id"),
        (("call", "x" * 200, "--retry"), "is not a call id"),
        (("calls", "work", "--state", "nope"), "is not a state"),
        (("calls", "work", "--limit", "0"), "--limit"),
        (("calls", "work", "--limit", "1001"), "--limit"),
    ):
        proc = plat.run(*args, check=False)
        assert proc.returncode in (1, 2) and says in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (plat.home / "run").exists()  # no daemon was started to ask


# -- against a daemon -----------------------------------------------------------------

HANDLER = """
def handle(event, context):
    query = dict(event.query)
    return {"statusCode": int(query.get("status", "200")), "body": "answer of " + event.path}
"""
QUICK = "async: {retries: 1, backoff: 100ms, max_backoff: 100ms}\n"


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("calls")) as runner:
        folder = write_python_function(
            tmp_path_factory.mktemp("fn"), "work", HANDLER, extra_manifest=QUICK
        )
        runner.run("deploy", str(folder))
        yield runner


def queue(plat: PlatRunner, target: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = plat.http(
        "POST", f"/async-function/{target}", body=b"", headers=headers, auth=token is None
    )
    assert result.status == 202, result.body
    call_id = json.loads(result.body)["call_id"]
    assert isinstance(call_id, str)
    return call_id


def shown(plat: PlatRunner, call_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(plat.run("call", call_id, "--json").stdout)
    return data


def finished(plat: PlatRunner, call_id: str) -> dict[str, Any]:
    assert wait_for(lambda: shown(plat, call_id)["state"] in ("done", "failed", "dead"), 30)
    return shown(plat, call_id)


def test_plat_calls_lists_a_functions_calls_with_their_states(plat: PlatRunner) -> None:
    done = queue(plat, "work/ok")
    dead = queue(plat, "work?status=503")
    finished(plat, done)
    finished(plat, dead)
    table = plat.run("calls", "work").stdout
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert table.splitlines()[0].split() == [
        "ID", "STATE", "TRIGGER", "ATTEMPTS", "STATUS", "AGE", "DURATION", "CALLBACK",
    ]  # fmt: skip
    assert lines[done].split()[1:5] == ["done", "async", "1", "200"]
    assert lines[dead].split()[1:5] == ["dead", "async", "2", "503"]
    rows = json.loads(plat.run("calls", "work", "--state", "dead", "--json").stdout)["calls"]
    assert dead in [r["id"] for r in rows] and {r["state"] for r in rows} == {"dead"}
    newest = json.loads(plat.run("calls", "work", "-n", "1", "--json").stdout)["calls"]
    assert [r["id"] for r in newest] == [dead]
    nothing = plat.run("calls", "work", "--state", "running")
    assert nothing.stdout == "" and "no running calls of work" in nothing.stderr


def test_plat_call_shows_attempts_and_the_answer(plat: PlatRunner) -> None:
    call_id = finished(plat, queue(plat, "work/path?status=503"))["id"]
    text = plat.run("call", call_id).stdout
    assert text.splitlines()[0] == f"call {call_id} of work  dead"
    assert "request   POST /path?status=503" in text
    assert "#1 " in text and "#2 " in text
    assert "response 503\nanswer of /path" in text


def test_plat_call_retry_queues_a_dead_call_and_refuses_a_done_one(plat: PlatRunner) -> None:
    dead = finished(plat, queue(plat, "work?status=500"))["id"]
    retried = plat.run("call", dead, "--retry")
    assert f"call {dead} queued again" in retried.stderr
    assert retried.stdout.splitlines()[0].split()[-1] in ("queued", "running")
    assert wait_for(
        lambda: shown(plat, dead)["attempts"] == 4 and shown(plat, dead)["state"] == "dead"
    )
    done = finished(plat, queue(plat, "work"))["id"]
    refused = plat.run("call", done, "--retry", check=False)
    assert refused.returncode == 1
    assert "only a dead or failed call can be retried" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_unknown_calls_and_functions_are_clear_errors(plat: PlatRunner) -> None:
    for args, says in (
        (("call", "0" * 32), f"no call {'0' * 32} is kept"),
        (("call", "0" * 32, "--retry"), f"no call {'0' * 32} is kept"),
        (("calls", "nope"), "no function named 'nope'"),
    ):
        proc = plat.run(*args, check=False)
        assert proc.returncode == 1 and says in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_tenant_sees_and_retries_only_its_own_calls(plat: PlatRunner, tmp_path: Path) -> None:
    acme_token = create_tenant(plat, "acme")
    acme, beta = remote(plat, acme_token), remote(plat, create_tenant(plat, "beta"))
    acme.run("deploy", str(write_python_function(tmp_path, "work", HANDLER, extra_manifest=QUICK)))
    theirs = finished(plat, queue(plat, "work.acme?status=502", token=acme_token))["id"]
    ours = finished(plat, queue(plat, "work?status=502"))["id"]
    assert [r["id"] for r in json.loads(acme.run("calls", "--json").stdout)["calls"]] == [theirs]
    assert f"call {theirs} of work" in acme.run("call", theirs).stdout
    for runner, call_id in ((beta, theirs), (acme, ours)):
        denied = runner.run("call", call_id, "--retry", check=False)
        assert denied.returncode == 1 and f"no call {call_id} is kept" in denied.stderr
    assert acme.run("call", theirs, "--retry").returncode == 0
    # The admin with --tenant sees that tenant's calls; without it, every tenant's.
    chosen = json.loads(plat.run("--tenant", "acme", "calls", "--json").stdout)["calls"]
    assert theirs in [r["id"] for r in chosen] and ours not in [r["id"] for r in chosen]
    table = plat.run("calls").stdout
    assert "TENANT" in table and "FUNCTION" in table and theirs in table and ours in table


def test_ls_shows_next_run_only_when_a_function_has_a_schedule(
    plat: PlatRunner, tmp_path: Path
) -> None:
    assert "NEXT RUN" not in plat.run("ls").stdout
    daily = 'schedule: ["30 12 * * *"]\n'
    plat.run("deploy", str(write_python_function(tmp_path, "daily", HANDLER, extra_manifest=daily)))
    table = plat.run("ls").stdout.splitlines()
    assert table[0].split()[-2:] == ["NEXT", "RUN"]
    # A TENANT column comes first once the tenants' test has deployed acme's work.
    (row,) = [line for line in table if "daily" in line.split()[:2]]
    assert row.rstrip().endswith("(12:30 UTC)") and " in " in row
    (other,) = [
        line
        for line in table
        if line.split()[0] == "work" or line.split()[:2] == ["default", "work"]
    ]
    assert other.rstrip().endswith(" -")
    (listed,) = [f for f in json.loads(plat.run("ls", "--json").stdout) if f["name"] == "daily"]
    assert time.gmtime(listed["next_run"])[3:6] == (12, 30, 0)
