"""`plat audit`, `plat audit verify` and `plat audit export`, end to end: the real CLI
(subprocesses) against a real daemon on the process backend, whose retention keeps
a handful of records so trimming and its checkpoint are seen within the test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import PlatRunner, make_runner, stop_daemon, wait_for


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    runner = make_runner(tmp_path_factory.mktemp("audit-cli"))
    runner.env.update({"PLAT_AUDIT_RECORDS": "8", "PLAT_LOG_TRIM_INTERVAL": "300ms"})
    try:
        runner.run("daemon", "start", "--backend", "process")
        yield runner
    finally:
        stop_daemon(runner)


def rows(plat: PlatRunner, *args: str) -> list[dict[str, Any]]:
    out = json.loads(plat.run("audit", "--json", *args).stdout)
    assert isinstance(out, list)
    return out


def test_an_empty_log_lists_nothing_and_verifies(plat: PlatRunner) -> None:
    listed = plat.run("audit")
    assert listed.stdout == "" and "no audit records yet" in listed.stderr
    assert plat.run("audit", "verify").stdout.startswith("0 records verified")


def test_list_filter_and_export(plat: PlatRunner, tmp_path: Path) -> None:
    plat.run("tenant", "create", "acme")
    plat.run("tenant", "token", "acme", "--rotate")
    assert plat.run("secret", "rm", "nope", check=False).returncode == 1
    table = plat.run("audit").stdout
    assert table.split()[:8] == [
        "TIME",
        "ACTOR",
        "ORIGIN",
        "ACTION",
        "TARGET",
        "TENANT",
        "OUTCOME",
        "PARAMS",
    ]
    assert "tenant.create" in table and "not_found" in table
    assert [r["action"] for r in rows(plat, "--action", "tenant.*")] == [
        "tenant.create",
        "tenant.token.rotate",
    ]
    assert [r["outcome"] for r in rows(plat, "--action", "secret.rm")] == ["not_found"]
    assert len(rows(plat, "--limit", "1")) == 1
    assert rows(plat, "--actor", "tenant:acme") == []
    assert len(rows(plat, "--since", "1h")) == 3
    assert rows(plat, "--since", "2999-01-01T00:00:00Z") == []
    exported = tmp_path / "audit.jsonl"
    with exported.open("w") as fh:
        subprocess.run(
            [*plat_cmd(), "audit", "export"], env=plat.env, stdout=fh, check=True, timeout=60
        )
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3]
    assert all(len(r["hash"]) == 64 for r in lines) and lines[1]["prev"] == lines[0]["hash"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "bad since 'yesterday'"),
        (["--limit", "0"], "limit must be a whole number from 1 to 10000"),
        (["--limit", "100000"], "limit must be a whole number from 1 to 10000"),
    ],
)
def test_bad_flags_are_clear_errors(plat: PlatRunner, args: list[str], message: str) -> None:
    proc = plat.run("audit", *args, check=False)
    assert proc.returncode == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_retention_trims_with_a_checkpoint_and_the_chain_still_verifies(
    plat: PlatRunner,
) -> None:
    for i in range(12):
        plat.run("tenant", "create", f"t{i}")
    assert wait_for(lambda: any(r["action"] == "audit.checkpoint" for r in rows(plat)), 15)
    kept = rows(plat, "--limit", "10000")
    assert len(kept) <= 8 + 1 + 12  # trimmed to 8, plus what came after the last trim
    checkpoints = [r for r in kept if r["action"] == "audit.checkpoint"]
    assert checkpoints[-1]["actor"] == "daemon"
    assert checkpoints[-1]["params"]["seq"] < kept[0]["seq"]
    proc = plat.run("audit", "verify")
    assert "records verified" in proc.stdout, proc.stdout
    verdict = json.loads(plat.run("audit", "verify", "--json").stdout)
    assert verdict["ok"] and verdict["first"] > 1


def test_verify_exits_1_naming_the_changed_record(plat: PlatRunner) -> None:
    db = plat.home / "plat.db"
    seq = int(sql(db, "SELECT MAX(seq) FROM audit WHERE action = 'tenant.create'"))
    sql(db, f"UPDATE audit SET actor = 'tenant:evil' WHERE seq = {seq}")
    proc = plat.run("audit", "verify", check=False)
    assert proc.returncode == 1
    assert f"record {seq} was changed" in proc.stderr
    assert "Traceback" not in proc.stderr
    as_json = plat.run("audit", "verify", "--json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["problems"][0]["seq"] == seq


def plat_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "plat"]


def sql(db: Path, statement: str) -> str:
    return subprocess.run(
        ["sqlite3", str(db), statement], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_parameters_stay_readable_on_an_80_column_terminal(plat: PlatRunner) -> None:
    """The parameters column keeps a readable width; the short ones give way."""
    plat.run("tenant", "create", "wide", "--max-instances", "7", "--max-memory", "1Gi")
    plat.env["COLUMNS"] = "80"
    try:
        narrow = plat.run("audit", "--action", "tenant.create").stdout
    finally:
        del plat.env["COLUMNS"]
    assert "max_instances=7" in narrow, narrow
