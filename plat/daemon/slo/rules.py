"""Prometheus recording and alerting rules for functions' SLOs (``plat slo rules``).

One rule group per function: the error ratio of each SLI over every window the
policy (:data:`plat.slo.POLICY`) needs, the objective, the budget left over 30
days, and two alerts per SLI, ``PlatSLOFastBurn`` (severity ``page``: 14.4x over
1h and 5m, or 6x over 6h and 30m) and ``PlatSLOSlowBurn`` (``ticket``: 3x over
1d and 2h, or 1x over 3d and 6h), as in the Google SRE workbook.

The SLIs come from the daemon's own metrics (:mod:`plat.daemon.metrics`):
availability from ``plat_invocations_total`` (a ``code`` of 5xx is an error),
latency from the ``plat_invocation_duration_seconds`` histogram. A histogram
counts calls per bucket only, so a latency threshold between two of its
boundaries is rounded up to the next one, and the rules say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml
from prometheus_client.utils import floatToGoString

from plat.daemon.metrics import INVOCATION_BUCKETS
from plat.slo import ALL_WINDOWS, BUDGET_WINDOW, POLICY, BurnAlert, Severity, SliName, Slo
from plat.tenancy import split_key

INVOCATIONS = "plat_invocations_total"
DURATION = "plat_invocation_duration_seconds"
ERROR_RATIO = "plat_slo:sli_error:ratio_rate"  # + the window: ..._rate5m
OBJECTIVE = "plat_slo:objective:ratio"
BUDGET_LEFT = "plat_slo:error_budget_left:ratio"
INTERVAL = "1m"
ALERTS: dict[Severity, str] = {"page": "PlatSLOFastBurn", "ticket": "PlatSLOSlowBurn"}
HEADER = """\
# Prometheus rules for plat's SLOs, written by `plat slo rules`: recording rules
# (the error ratio of each SLI over 5m ... 30d, the objective, the 30-day budget
# left) and multi-window, multi-burn-rate alerts (Google SRE workbook):
#   PlatSLOFastBurn (severity page):   14.4x the budget over 1h and 5m, or 6x over 6h and 30m
#   PlatSLOSlowBurn (severity ticket): 3x over 1d and 2h, or 1x over 3d and 6h
# Load it with `rule_files:` in prometheus.yml; check it with `promtool check rules`.
# See docs/slo.md.
"""


def boundary(threshold: float, buckets: Sequence[float] = INVOCATION_BUCKETS) -> float | None:
    """The smallest bucket boundary at or above ``threshold`` (seconds), which the
    rules count calls against; None above the largest (only +Inf is left)."""
    for bound in buckets:
        # 300ms parses to 0.30000000000000004: a hair above a boundary is on it.
        if bound >= threshold or math.isclose(bound, threshold, rel_tol=1e-9):
            return bound
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _decimal(number: float) -> Decimal:
    """``number`` as the decimal it was written as (99.9, not 99.900000000000006)."""
    return Decimal(repr(number))


def _plain(number: Decimal) -> str:
    return format(number.normalize(), "f")


def _label(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass
class Rules:
    """The rules of some functions, and what the reader must know about them."""

    groups: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(group["rules"]) for group in self.groups)

    def to_yaml(self) -> str:
        notes = "".join(f"# NOTE: {note}\n" for note in self.notes)
        body = yaml.dump(
            {"groups": self.groups}, Dumper=_Dumper, sort_keys=False, width=200, allow_unicode=True
        )
        return HEADER + notes + body


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, which stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def slo_rules(slos: Sequence[tuple[str, Slo]]) -> Rules:
    """The rules for functions ``slos`` (function key, its SLO), one group each."""
    rules = Rules()
    for key, slo in slos:
        group, notes = _function_group(key, slo)
        rules.notes += notes
        if group["rules"]:
            rules.groups.append(group)
    return rules


def latency_note(slo: Slo) -> str | None:
    """What the rules do with a latency threshold that is not a bucket boundary."""
    if slo.latency is None:
        return None
    threshold = slo.latency.threshold
    bound = boundary(threshold)
    what = f"latency {slo.latency.name} {_ms(threshold)}"
    if bound is None:
        return (
            f"{what} is above the largest bucket of {DURATION} ({_ms(INVOCATION_BUCKETS[-1])}): "
            "no Prometheus rules for it; `plat slo` reports it from the invocation records"
        )
    if not math.isclose(bound, threshold, rel_tol=1e-9):
        return (
            f"{what} is not a bucket boundary of {DURATION}: the Prometheus rules count calls "
            f'of at most {_ms(bound)} (le="{floatToGoString(bound)}"), the next boundary up, so '
            "they are more lenient than the objective; `plat slo` counts the exact threshold"
        )
    return None


def _function_group(key: str, slo: Slo) -> tuple[dict[str, Any], list[str]]:
    name, tenant = split_key(key)
    selector = f"tenant={_label(tenant)}, function={_label(name)}"
    rules: list[dict[str, Any]] = []
    note = latency_note(slo)
    notes = [f"{name} (tenant {tenant}): {note}"] if note else []
    for sli in slo.slis:
        if sli == "latency":
            assert slo.latency is not None
            bound = boundary(slo.latency.threshold)
            if bound is None:
                continue
            ratio = _latency_ratio(selector, bound)
        else:
            ratio = _availability_ratio(selector)
        # The same values the expressions give, written out too: promtool (rightly)
        # lints rules of one name whose static labels do not tell them apart.
        labels = {"tenant": tenant, "function": name, "sli": sli}
        for window in ALL_WINDOWS:
            rules.append(
                {
                    "record": ERROR_RATIO + window.name,
                    "expr": ratio.replace("$window", window.name),
                    "labels": dict(labels),
                }
            )
        budget = _decimal(100) - _decimal(slo.objective(sli))
        budget_ratio = budget / 100
        objective = 1 - budget_ratio
        rules.append(
            {
                "record": OBJECTIVE,
                "expr": f"vector({_plain(objective)})",
                "labels": dict(labels),
            }
        )
        spent = f"{_series(BUDGET_WINDOW.name, selector, sli)} / {_plain(budget_ratio)}"
        rules.append(
            {
                "record": BUDGET_LEFT,
                "expr": f"1 - {spent}",
                "labels": dict(labels),
            }
        )
        for severity in ALERTS:
            policy = [p for p in POLICY if p.severity == severity]
            alert = _alert(name, tenant, slo, sli, severity, policy, selector, budget_ratio)
            alert["labels"] = {**labels, **alert["labels"]}
            rules.append(alert)
    # Once a minute is plenty for windows of 5m and more, and a 30d rate over a
    # scrape every 5s is costly to evaluate at the global evaluation_interval.
    group = {"name": f"plat-slo:{tenant}/{name}", "interval": INTERVAL, "rules": rules}
    return group, notes


def _availability_ratio(selector: str) -> str:
    errors = f'sum by (tenant, function) (rate({INVOCATIONS}{{{selector}, code=~"5.."}}[$window]))'
    calls = f"sum by (tenant, function) (rate({INVOCATIONS}{{{selector}}}[$window]))"
    # No 5xx series at all is no errors: `or 0 * calls` gives 0 instead of nothing.
    return f"(\n  {errors}\n  or 0 * {calls}\n)\n/\n{calls}\n"


def _latency_ratio(selector: str, bound: float) -> str:
    le = f'le="{floatToGoString(bound)}"'
    fast = f"sum by (tenant, function) (rate({DURATION}_bucket{{{selector}, {le}}}[$window]))"
    calls = f"sum by (tenant, function) (rate({DURATION}_count{{{selector}}}[$window]))"
    return f"1 - (\n  {fast}\n  /\n  {calls}\n)\n"


def _series(window: str, selector: str, sli: SliName) -> str:
    return f'{ERROR_RATIO}{window}{{{selector}, sli="{sli}"}}'


def _alert(
    name: str,
    tenant: str,
    slo: Slo,
    sli: SliName,
    severity: Severity,
    policy: list[BurnAlert],
    selector: str,
    budget: Decimal,
) -> dict[str, Any]:
    branches = []
    for entry in policy:
        threshold = _plain(_decimal(entry.factor) * budget)
        branches.append(
            f"(\n  {_series(entry.long.name, selector, sli)} > {threshold}\n"
            f"  and\n  {_series(entry.short.name, selector, sli)} > {threshold}\n)"
        )
    windows = ", or ".join(f"{p.factor:g}x over {p.long.name} and {p.short.name}" for p in policy)
    what = "answers that are a 5xx"
    if sli == "latency":
        assert slo.latency is not None
        bound = boundary(slo.latency.threshold)
        assert bound is not None
        what = f"calls slower than {_ms(bound)} ({slo.latency.name} {_ms(slo.latency.threshold)})"
    speed = "fast" if severity == "page" else "steadily"
    return {
        "alert": ALERTS[severity],
        "expr": "\nor\n".join(branches) + "\n",
        "labels": {"severity": severity},
        "annotations": {
            "summary": f"{name} (tenant {tenant}) is burning its {sli} error budget {speed}",
            "description": (
                f"The share of {what} is above the budget ({_plain(budget * 100)} % of calls, "
                f"objective {slo.objective(sli):g} % over 30 days) times the burn rate: "
                f"{windows}. `plat slo {name}` shows each window."
            ),
        },
    }
