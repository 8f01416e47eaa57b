"""plat.daemon.slo.rules: the generated Prometheus rules, checked by the real
``promtool check rules`` and evaluated by ``promtool test rules`` over synthetic
series of the daemon's own metric names: the fast-burn alert fires on a burning
function, and stays silent on a healthy one and on another tenant's ``hello``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from plat.daemon.metrics import INVOCATION_BUCKETS, Metrics
from plat.daemon.slo.rules import ALERTS, Rules, boundary, slo_rules
from plat.slo import Slo
from tests.daemon.test_metrics import dashboard, grafana_to_promql, promtool

HELLO = Slo.model_validate({"availability": 99.9, "latency": {"p95": "300ms"}})


def rules_of(*slos: tuple[str, dict[str, Any]]) -> Rules:
    return slo_rules([(key, Slo.model_validate(slo)) for key, slo in slos])


def write(tmp_path: Path, rules: Rules) -> Path:
    path = tmp_path / "slo-rules.yml"
    path.write_text(rules.to_yaml())
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("threshold", "bound"),
    [
        (0.0001, 0.0005),
        (0.0005, 0.0005),
        (0.3, 0.5),
        (0.25, 0.25),
        (250 * 0.001, 0.25),
        (0.30000000000000004, 0.5),
        (1.0, 1.0),
        (1.0000000001, 1.0),  # within float noise of a boundary: on it
        (1.001, 2.5),
        (30.0, 30.0),
        (30.5, None),
        (3600.0, None),
    ],
)
def test_a_threshold_is_rounded_up_to_a_bucket_boundary(
    threshold: float, bound: float | None
) -> None:
    assert boundary(threshold) == bound
    assert bound is None or bound in INVOCATION_BUCKETS


def test_promtool_accepts_the_rules_of_many_functions_and_tenants(tmp_path: Path) -> None:
    rules = rules_of(
        ("hello", HELLO.model_dump()),
        ("hello.acme", {"availability": 99.5}),
        ("api.acme", {"latency": {"p99": "45s"}}),  # above the largest bucket: no rules
        ("fast-one", {"latency": {"p99.9": "250ms"}}),  # on a boundary: no note
        ("x", {"availability": 99.99999}),
    )
    proc = check(write(tmp_path, rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {rules.count} rules found" in proc.stdout
    names = [group["name"] for group in rules.groups]
    assert names == [
        "plat-slo:default/hello",
        "plat-slo:acme/hello",
        "plat-slo:default/fast-one",
        "plat-slo:default/x",
    ]
    # Each SLI: 8 error ratios, the objective, the budget left, a page and a ticket alert.
    assert [len(group["rules"]) for group in rules.groups] == [24, 12, 12, 12]
    assert len(rules.notes) == 2
    assert rules.notes[0].startswith("hello (tenant default): latency p95 300 ms is not a bucket")
    assert 'le="0.5"' in rules.notes[0]
    assert rules.notes[1].startswith("api (tenant acme): latency p99 45 s is above the largest")
    text = rules.to_yaml()
    assert all(f"# NOTE: {note}" in text for note in rules.notes)
    (objective,) = [
        r["expr"] for r in rules.groups[3]["rules"] if r.get("record") == "plat_slo:objective:ratio"
    ]
    assert objective == "vector(0.9999999)"  # exactly as written, no float noise


def test_no_slo_at_all_is_a_valid_file_without_groups(tmp_path: Path) -> None:
    rules = slo_rules([])
    assert yaml.safe_load(rules.to_yaml()) == {"groups": []}
    proc = check(write(tmp_path, rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_rules_select_series_the_daemon_exports() -> None:
    """The names and the le value in the rules' selectors are the exposition's."""
    metrics = Metrics(lambda: [])
    for key in ("hello", "hello.acme"):
        metrics.request_started(key)
        metrics.request_finished(key, 503, 0.2, cold=False)
    exported = {
        (s.name, s.labels.get("le"))
        for family in text_string_to_metric_families(metrics.render()[0].decode())
        for s in family.samples
        if s.labels.get("function") == "hello"
    }
    assert ("plat_invocations_total", None) in exported
    assert ("plat_invocation_duration_seconds_bucket", "0.5") in exported
    assert ("plat_invocation_duration_seconds_count", None) in exported
    text = slo_rules([("hello", HELLO)]).to_yaml()
    for name in ("plat_invocations_total{", "plat_invocation_duration_seconds_count{"):
        assert name in text
    assert (
        'plat_invocation_duration_seconds_bucket{tenant="default", function="hello", le="0.5"}'
        in text
    )


# promtool test rules


def labels(tenant: str, function: str, **extra: str) -> str:
    pairs = {"job": "plat", "instance": "127.0.0.1:8080", "tenant": tenant, "function": function}
    return ", ".join(f'{k}="{v}"' for k, v in {**pairs, **extra}.items())


def calls(tenant: str, function: str, code: int, per_minute: float, minutes: int) -> dict[str, str]:
    return {
        "series": f"plat_invocations_total{{{labels(tenant, function, code=str(code))}}}",
        "values": f"0+{per_minute:g}x{minutes}",
    }


def expected(rules: Rules, alert: str, tenant: str, function: str, sli: str) -> dict[str, Any]:
    """The alert as promtool reports it when it fires: its labels and annotations."""
    (rule,) = [
        r
        for group in rules.groups
        for r in group["rules"]
        if r.get("alert") == alert
        and r["labels"]["sli"] == sli
        and r["labels"]["tenant"] == tenant
        and r["labels"]["function"] == function
    ]
    return {"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}


def run_tests(tmp_path: Path, rules: Rules, tests: list[dict[str, Any]]) -> None:
    write(tmp_path, rules)
    unit = {"rule_files": ["slo-rules.yml"], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "slo-test.yml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False))
    proc = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


FAST, SLOW = ALERTS["page"], ALERTS["ticket"]


def test_the_fast_burn_alert_fires_for_the_burning_function_only(tmp_path: Path) -> None:
    rules = rules_of(("hello", HELLO.model_dump()), ("hello.acme", {"availability": 99.9}))
    page = expected(rules, FAST, "default", "hello", "availability")
    tests = [
        {
            # default's hello: half its answers are 5xx; acme's hello: all fine.
            "interval": "1m",
            "input_series": [
                calls("default", "hello", 200, 60, 60),
                calls("default", "hello", 500, 60, 60),
                calls("acme", "hello", 200, 120, 60),
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": FAST, "exp_alerts": [page]},
                # Before any 5m of data there is no rate, so nothing fires yet.
                {"eval_time": "0m", "alertname": FAST, "exp_alerts": []},
            ],
            "promql_expr_test": [
                {
                    "expr": "plat_slo:sli_error:ratio_rate5m",
                    "eval_time": "30m",
                    "exp_samples": [
                        {
                            "labels": 'plat_slo:sli_error:ratio_rate5m{tenant="default", '
                            'function="hello", sli="availability"}',
                            "value": 0.5,
                        },
                        {
                            "labels": 'plat_slo:sli_error:ratio_rate5m{tenant="acme", '
                            'function="hello", sli="availability"}',
                            "value": 0,
                        },
                    ],
                },
                {
                    "expr": 'plat_slo:error_budget_left:ratio{tenant="acme"}',
                    "eval_time": "30m",
                    "exp_samples": [
                        {
                            "labels": 'plat_slo:error_budget_left:ratio{tenant="acme", '
                            'function="hello", sli="availability"}',
                            "value": 1,
                        }
                    ],
                },
            ],
        }
    ]
    run_tests(tmp_path, rules, tests)


def test_a_healthy_function_stays_silent(tmp_path: Path) -> None:
    rules = rules_of(("hello", HELLO.model_dump()))
    quiet: list[dict[str, Any]] = [
        {"eval_time": when, "alertname": name, "exp_alerts": []}
        for when in ("10m", "1h", "6h")
        for name in (FAST, SLOW)
    ]
    fast_enough = {
        "series": "plat_invocation_duration_seconds_bucket"
        f"{{{labels('default', 'hello', le='0.5')}}}",
        "values": "0+2000x400",
    }
    counted = {
        "series": f"plat_invocation_duration_seconds_count{{{labels('default', 'hello')}}}",
        "values": "0+2000x400",
    }
    tests = [
        # Not one error, every call under 500 ms.
        {
            "interval": "1m",
            "input_series": [calls("default", "hello", 200, 2000, 400), fast_enough, counted],
            "alert_rule_test": quiet,
        },
        # One 5xx in 2000 calls (0.05 %, half the budget's rate) and 401s and 429s,
        # which are not errors of the function.
        {
            "interval": "1m",
            "input_series": [
                calls("default", "hello", 200, 1999, 400),
                calls("default", "hello", 502, 1, 400),
                calls("default", "hello", 401, 500, 400),
                calls("default", "hello", 429, 500, 400),
                fast_enough,
                counted,
            ],
            "alert_rule_test": quiet,
        },
    ]
    run_tests(tmp_path, rules, tests)


def test_a_slow_burn_opens_a_ticket_without_paging(tmp_path: Path) -> None:
    rules = rules_of(("hello", {"availability": 99.9}))
    # 0.5 % errors: 5x the budget's rate, over 3x (ticket), under 6x and 14.4x (page).
    tests = [
        {
            "interval": "1m",
            "input_series": [
                calls("default", "hello", 200, 995, 200),
                calls("default", "hello", 500, 5, 200),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "3h",
                    "alertname": SLOW,
                    "exp_alerts": [expected(rules, SLOW, "default", "hello", "availability")],
                },
                {"eval_time": "3h", "alertname": FAST, "exp_alerts": []},
            ],
        }
    ]
    run_tests(tmp_path, rules, tests)


def test_slow_calls_page_on_the_latency_slo_alone(tmp_path: Path) -> None:
    rules = rules_of(("hello", HELLO.model_dump()))
    # 90 % of calls over 500 ms: 18x the budget of a p95 objective (5 %).
    tests = [
        {
            "interval": "1m",
            "input_series": [
                calls("default", "hello", 200, 100, 60),
                {
                    "series": "plat_invocation_duration_seconds_bucket"
                    f"{{{labels('default', 'hello', le='0.5')}}}",
                    "values": "0+10x60",
                },
                {
                    "series": "plat_invocation_duration_seconds_count"
                    f"{{{labels('default', 'hello')}}}",
                    "values": "0+100x60",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": FAST,
                    "exp_alerts": [expected(rules, FAST, "default", "hello", "latency")],
                }
            ],
        }
    ]
    run_tests(tmp_path, rules, tests)


def test_the_dashboards_slo_panels_agree_with_the_rules(tmp_path: Path) -> None:
    """Over the same series, the Grafana SLO panels show what the recording rules
    record: the 5xx share over 5m, availability and the share of calls within 500 ms
    over 1h, for two tenants' hello kept apart."""
    panels = {p["title"]: p for p in dashboard()["panels"]}
    (availability,) = panels["Availability (not 5xx), 1h window"]["targets"]
    five_minutes, _ = panels["5xx share over the paging windows (5m, 1h)"]["targets"]
    _, within_500ms, _ = panels["Calls within 250 ms / 500 ms / 1 s, 1h window"]["targets"]
    (month,) = panels["Availability, last 30 days"]["targets"]
    assert month["instant"] and "[30d]" in month["expr"]
    rules = rules_of(("hello", HELLO.model_dump()), ("hello.acme", HELLO.model_dump()))

    def same(panel: str, rule: str) -> dict[str, Any]:
        # Both sides' labels dropped and compared as one number per tenant.
        return {
            "expr": f"sum by (tenant) ({grafana_to_promql(panel)}) - sum by (tenant) ({rule})",
            "eval_time": "50m",
            "exp_samples": [
                {"labels": f'{{tenant="{tenant}"}}', "value": 0} for tenant in ("default", "acme")
            ],
        }

    def duration(tenant: str, suffix: str, step: int, le: str = "") -> dict[str, str]:
        extra = {"le": le} if le else {}
        return {
            "series": f"plat_invocation_duration_seconds_{suffix}"
            f"{{{labels(tenant, 'hello', **extra)}}}",
            "values": f"0+{step}x60",
        }

    tests = [
        {
            "interval": "1m",
            "input_series": [
                calls("default", "hello", 200, 90, 60),
                calls("default", "hello", 503, 10, 60),
                calls("acme", "hello", 200, 100, 60),
                duration("default", "bucket", 70, "0.5"),
                duration("default", "count", 100),
                duration("acme", "bucket", 100, "0.5"),
                duration("acme", "count", 100),
            ],
            "promql_expr_test": [
                same(five_minutes["expr"], "plat_slo:sli_error:ratio_rate5m{sli='availability'}"),
                same(
                    availability["expr"], "1 - plat_slo:sli_error:ratio_rate1h{sli='availability'}"
                ),
                same(within_500ms["expr"], "1 - plat_slo:sli_error:ratio_rate1h{sli='latency'}"),
                {
                    "expr": grafana_to_promql(availability["expr"]),
                    "eval_time": "50m",
                    "exp_samples": [
                        {"labels": '{tenant="default", function="hello"}', "value": 0.9},
                        {"labels": '{tenant="acme", function="hello"}', "value": 1},
                    ],
                },
            ],
        }
    ]
    run_tests(tmp_path, rules, tests)


MONITORING = Path(__file__).resolve().parents[3] / "monitoring"


def test_the_example_in_monitoring_is_what_plat_slo_rules_writes_and_loads(
    tmp_path: Path,
) -> None:
    example = (MONITORING / "slo-rules.example.yml").read_text()
    assert example == slo_rules([("hello", HELLO)]).to_yaml()
    # prometheus.yml with its rule_files block uncommented loads it.
    lines = (MONITORING / "prometheus.yml").read_text().splitlines()
    start = lines.index("# rule_files:")
    lines[start : start + 2] = [line.removeprefix("# ") for line in lines[start : start + 2]]
    config = tmp_path / "prometheus.yml"
    config.write_text("\n".join(lines) + "\n")
    assert yaml.safe_load(config.read_text())["rule_files"] == ["slo-rules.yml"]
    (tmp_path / "slo-rules.yml").write_text(example)
    proc = subprocess.run(
        [promtool(), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 24 rules found" in proc.stdout
