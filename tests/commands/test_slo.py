"""`plat slo [NAME]` and `plat slo rules` end to end: the real CLI (subprocesses)
against a real daemon on the process backend, calls through the real gateway, and
the rules it writes checked by the real promtool."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.commands.remote import create_tenant, process_daemon, remote
from tests.daemon.test_metrics import promtool
from tests.fixtures import PlatRunner
from tests.functions import write_python_function

# ?status=N answers N; ?sleep=S takes S seconds first.
HANDLER = """
import time

def handle(event, context):
    query = dict(event.query)
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    return {"statusCode": int(query.get("status", "200")), "body": "ok"}
"""
HELLO_SLO = "slo: {availability: 99.9, latency: {p95: 300ms}}\n"


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatRunner]:
    with process_daemon(tmp_path_factory.mktemp("slo")) as runner:
        yield runner


def sli(function: dict[str, Any], name: str, window: str) -> dict[str, Any]:
    (found,) = [s for s in function["slis"] if s["sli"] == name]
    if window == "":
        return found
    (span,) = [w for w in found["windows"] if w["window"] == window]
    return span


def test_slo_of_a_deployed_function_over_real_calls(plat: PlatRunner, tmp_path: Path) -> None:
    none = plat.run("slo")
    assert none.stdout == ""
    assert "no function has an SLO" in none.stderr

    plat.run(
        "deploy", str(write_python_function(tmp_path, "hello", HANDLER, extra_manifest=HELLO_SLO))
    )
    plat.run("deploy", str(write_python_function(tmp_path, "plain", HANDLER)))
    for _ in range(17):
        assert plat.http("GET", "/function/hello").status == 200
    assert plat.http("GET", "/function/hello?status=503").status == 503
    assert plat.http("GET", "/function/hello?status=429").status == 429
    assert plat.http("GET", "/function/hello?status=404").status == 404
    assert plat.http("GET", "/function/hello?sleep=0.5").status == 200
    assert plat.http("GET", "/function/plain?status=500").status == 500

    data = json.loads(plat.run("slo", "--json").stdout)
    assert (data["invocation_records"], data["invocation_age"]) == (100_000, 7 * 86400)
    (hello,) = data["functions"]
    assert (hello["function"], hello["tenant"]) == ("hello", "default")
    five = sli(hello, "availability", "5m")
    assert (five["calls"], five["good"]) == (21, 20)  # the 429 and the 404 are no errors
    assert five["burn_rate"] == pytest.approx((1 / 21) / 0.001)
    assert sli(hello, "availability", "")["alert"] == "page"
    slow = sli(hello, "latency", "5m")
    assert slow["calls"] == 21 and slow["good"] <= 20  # the 0.5 s call missed 300 ms
    assert sli(hello, "latency", "")["rules_threshold"] == 0.5

    table = plat.run("slo").stdout
    for text in ("hello", "availability", "latency p95 ≤ 300 ms", "99.9 %", "burn rate", "PAGE"):
        assert text in table, table
    assert "plain" not in table
    assert "30d*" in table  # the default retention keeps 7 days of records
    assert "the 30d window covers only the last 7d" in table
    assert "300 ms is not a bucket boundary" in table

    one = json.loads(plat.run("slo", "hello", "--json").stdout)
    assert [f["function"] for f in one["functions"]] == ["hello"]
    shown = json.loads(plat.run("slo", "show", "hello", "--json").stdout)
    assert [f["function"] for f in shown["functions"]] == ["hello"]


def test_a_function_without_an_slo_or_none_at_all_is_an_error(
    plat: PlatRunner, tmp_path: Path
) -> None:
    plat.run("deploy", str(write_python_function(tmp_path, "plain", HANDLER)))
    missing = plat.run("slo", "plain", check=False)
    assert missing.returncode == 1
    assert "function 'plain' has no SLO" in missing.stderr
    assert "slo: {availability: 99.9" in missing.stderr
    nope = plat.run("slo", "nope", check=False)
    assert nope.returncode == 1 and "no function named 'nope'" in nope.stderr
    bad = plat.run("slo", "../../v1/status", check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_rules_written_by_the_cli_pass_promtool(plat: PlatRunner, tmp_path: Path) -> None:
    plat.run(
        "deploy", str(write_python_function(tmp_path, "hello", HANDLER, extra_manifest=HELLO_SLO))
    )
    path = tmp_path / "slo-rules.yml"
    written = plat.run("slo", "rules", "-o", str(path))
    assert f"wrote 24 rules for 1 function(s) to {path}" in written.stderr
    assert "300 ms is not a bucket boundary" in written.stderr  # the rounding, said
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 24 rules found" in proc.stdout
    assert plat.run("slo", "rules").stdout == path.read_text()
    assert [g["name"] for g in yaml.safe_load(path.read_text())["groups"]] == [
        "plat-slo:default/hello"
    ]
    nowhere = plat.run("slo", "rules", "-o", str(tmp_path / "no" / "such" / "dir.yml"), check=False)
    assert nowhere.returncode == 1 and "cannot write" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def test_a_remote_tenant_sees_only_its_own_slos(plat: PlatRunner, tmp_path: Path) -> None:
    plat.run(
        "deploy", str(write_python_function(tmp_path, "hello", HANDLER, extra_manifest=HELLO_SLO))
    )
    acme = remote(plat, create_tenant(plat, "acme"))
    beta = remote(plat, create_tenant(plat, "beta"))
    folder = write_python_function(
        tmp_path / "acme", "hello", HANDLER, extra_manifest="slo: {availability: 99}\n"
    )
    acme.run("deploy", str(folder))
    data = json.loads(acme.run("slo", "--json").stdout)
    assert [(f["function"], f["tenant"]) for f in data["functions"]] == [("hello", "acme")]
    rules = yaml.safe_load(acme.run("slo", "rules").stdout)
    assert [g["name"] for g in rules["groups"]] == ["plat-slo:acme/hello"]

    # beta has no hello; asking for it shows nothing of acme's or the default tenant's.
    denied = beta.run("slo", "hello", check=False)
    assert denied.returncode == 1 and "no function named 'hello'" in denied.stderr
    assert json.loads(beta.run("slo", "--json").stdout)["functions"] == []

    # The admin sees both tenants' hello.
    every = json.loads(plat.run("slo", "--json").stdout)["functions"]
    assert {("hello", "default"), ("hello", "acme")} <= {
        (f["function"], f["tenant"]) for f in every
    }
    only = json.loads(plat.run("--tenant", "acme", "slo", "--json").stdout)["functions"]
    assert [f["tenant"] for f in only] == ["acme"]
