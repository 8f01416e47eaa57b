"""The audit log end to end with a real daemon and real containers: the CLI's changes
over the socket and a tenant's over the gateway recorded with who and from where,
a secret's value in no record, a flood of forged tokens leaving a bounded trace,
a tenant seeing only its records, and the real `sqlite3` CLI editing, deleting and
swapping rows, each caught by `plat audit verify`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands.remote import create_tenant, remote
from tests.fixtures import PlatRunner, daemon_session, make_runner
from tests.functions import write_python_function

pytestmark = pytest.mark.container

SECRET = "audit-e2e-value-7f3a9c"
HELLO = """
def handle(event, context):
    return "hello"
"""


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with daemon_session(make_runner(tmp_path_factory.mktemp("audit"))) as runner:
        yield runner


def records(plat: PlatRunner, *args: str) -> list[dict[str, Any]]:
    rows = json.loads(plat.run("audit", "--json", "--limit", "10000", *args).stdout)
    assert isinstance(rows, list)
    return rows


def sql(plat: PlatRunner, statement: str) -> str:
    """What someone with write access to the database could do: the sqlite3 CLI."""
    proc = subprocess.run(
        ["sqlite3", str(plat.home / "plat.db"), statement],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def verify(plat: PlatRunner) -> subprocess.CompletedProcess[str]:
    return plat.run("audit", "verify", check=False)


def test_changes_are_recorded_with_who_and_from_where(plat: PlatRunner, tmp_path: Path) -> None:
    folder = write_python_function(tmp_path, "hello", HELLO)
    plat.run("deploy", str(folder))
    plat.run("scale", "hello", "--min", "1", "--max", "2")
    plat.run("secret", "set", "db", "--from-literal", SECRET)
    token = create_tenant(plat, "acme")
    as_acme = remote(plat, token)
    as_acme.run("secret", "set", "key", input=SECRET)
    as_acme.run("deploy", str(folder))
    as_acme.run("rm", "hello")
    plat.run("tenant", "token", "acme", "--rotate")
    plat.run("secret", "rm", "db")
    plat.run("rm", "hello")

    rows = records(plat)
    seen = [(r["action"], r["target"], r["actor"], r["tenant"], r["outcome"]) for r in rows]
    assert seen == [
        ("function.deploy", "hello", "admin", "default", "ok"),
        ("function.scale", "hello", "admin", "default", "ok"),
        ("secret.set", "db", "admin", "default", "ok"),
        ("tenant.create", "acme", "admin", "acme", "ok"),
        ("secret.set", "key", "tenant:acme", "acme", "ok"),
        ("function.deploy", "hello", "tenant:acme", "acme", "ok"),
        ("function.rm", "hello", "tenant:acme", "acme", "ok"),
        ("tenant.token.rotate", "acme", "admin", "acme", "ok"),
        ("secret.rm", "db", "admin", "default", "ok"),
        ("function.rm", "hello", "admin", "default", "ok"),
    ]
    socket_uid = f"uid:{os.getuid()}"
    assert {r["origin"] for r in rows if r["actor"] == "admin"} == {socket_uid}
    assert {r["origin"] for r in rows if r["actor"] == "tenant:acme"} == {"127.0.0.1"}
    assert (rows[1]["params"]["min"], rows[1]["params"]["max"]) == (1, 2)
    assert rows[0]["params"]["version"] and rows[5]["params"]["uploaded"] is True

    exported = plat.run("audit", "export").stdout
    assert len(exported.splitlines()) == len(rows)
    for secret in (SECRET, token):
        assert secret not in exported
    assert SECRET.encode() not in (plat.home / "plat.db").read_bytes()

    table = plat.run("audit", "--action", "secret.*").stdout
    assert "secret.set" in table and "secret.rm" in table and "function" not in table


def test_a_forged_token_flood_leaves_a_bounded_trace(plat: PlatRunner, tmp_path: Path) -> None:
    folder = write_python_function(tmp_path, "guarded", HELLO)
    plat.run("deploy", str(folder))
    for i in range(300):
        forged = {"Authorization": f"Bearer plat_forged_{i}", "X-Plat-Peer": "6.6.6.6"}
        assert plat.http("GET", "/function/guarded", headers=forged, auth=False).status == 401
        assert plat.http("GET", "/api/v1/functions", headers=forged, auth=False).status == 401
    failed = records(plat, "--action", "auth.failed")
    assert len(failed) == 10  # one origin's share a minute, both doors together
    assert {r["origin"] for r in failed} == {"127.0.0.1"}  # a client's X-Plat-Peer is dropped
    assert {r["target"] for r in failed} <= {"guarded", "/api/v1/functions"}
    assert "plat_forged" not in json.dumps(failed)
    # A stop writes what the window left out as one summary.
    plat.run("daemon", "stop")
    plat.run("daemon", "start")
    (summary,) = [
        r for r in records(plat, "--action", "auth.failed") if r["outcome"] != "unauthorized"
    ]
    assert (summary["outcome"], summary["params"]["suppressed"]) == ("suppressed", 590)
    shutdown = records(plat, "--action", "daemon.shutdown")
    assert [r["actor"] for r in shutdown] == ["admin"]
    plat.run("rm", "guarded")


def test_a_tenant_sees_only_its_records(plat: PlatRunner) -> None:
    token = create_tenant(plat, "beta")
    mine = json.loads(remote(plat, token).run("audit", "--json").stdout)
    assert [(r["action"], r["tenant"]) for r in mine] == [("tenant.create", "beta")]
    refused = remote(plat, token).run("audit", "verify", check=False)
    assert refused.returncode == 1 and "needs the admin token" in refused.stderr


def test_verify_catches_edited_deleted_and_swapped_rows(plat: PlatRunner) -> None:
    ok = verify(plat)
    assert ok.returncode == 0, ok.stderr
    count = int(sql(plat, "SELECT COUNT(*) FROM audit"))
    assert f"{count} records verified" in ok.stdout

    original = sql(plat, "SELECT outcome FROM audit WHERE seq = 3")
    sql(plat, "UPDATE audit SET outcome = 'forbidden' WHERE seq = 3")
    changed = verify(plat)
    assert changed.returncode == 1
    assert "record 3 was changed" in changed.stderr
    sql(plat, f"UPDATE audit SET outcome = '{original}' WHERE seq = 3")
    assert verify(plat).returncode == 0

    columns = sql(plat, "SELECT group_concat(name, ',') FROM pragma_table_info('audit')")
    sql(plat, "CREATE TABLE keep AS SELECT * FROM audit WHERE seq = 5")
    sql(plat, "DELETE FROM audit WHERE seq = 5")
    missing = verify(plat)
    assert missing.returncode == 1 and "record 5 is missing" in missing.stderr, missing.stderr
    sql(plat, f"INSERT INTO audit({columns}) SELECT {columns} FROM keep; DROP TABLE keep")
    assert verify(plat).returncode == 0

    sql(plat, "UPDATE audit SET id = -1 WHERE seq = 7")
    sql(plat, "UPDATE audit SET id = 7 WHERE seq = 8; UPDATE audit SET id = 8 WHERE seq = 7")
    swapped = verify(plat)
    assert swapped.returncode == 1 and "record 7 was moved" in swapped.stderr, swapped.stderr
