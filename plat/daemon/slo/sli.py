"""A function's SLIs, error budget and burn rates, from its invocation records.

Availability is the share of calls that were not a 5xx: a 4xx (429, 401, 404,
the 499 of a client that went away) is the caller's doing or a refusal the
function chose, not a failure of the function. Latency is the share of calls
answered in the threshold or less, timed as the gateway times them (waiting for
an instance included). The burn rate over a window is its error ratio divided by
the budget (1 - objective): 1 spends the 30-day budget in exactly 30 days.

The records are the store's, kept as the retention settings say
(``invocation_records`` per function, ``invocation_age``): a window longer than
what is kept covers less, and the report says so.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

from plat.daemon.journal import Retention
from plat.daemon.slo.rules import boundary, latency_note
from plat.daemon.store import Invocation
from plat.slo import (
    ALL_WINDOWS,
    BUDGET_WINDOW,
    POLICY,
    SHOWN_WINDOWS,
    Severity,
    SliName,
    SliReport,
    Slo,
    SloReport,
    Window,
    WindowReport,
)
from plat.tenancy import split_key

# A window is short of its length only by more than this (records are a few ms late).
SLACK = 1.0


def human(seconds: float) -> str:
    """7d, 36h, 2.5h, 20m, 45s: a span as the windows are written."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    return f"{seconds:.0f}s"


def is_error(record: Invocation) -> bool:
    """Whether a call counts against availability: a 5xx, whoever answered it."""
    return record.status >= 500


def _coverage(records: Sequence[Invocation], now: float, retention: Retention) -> tuple[float, str]:
    """Since when records can be there, and why not earlier."""
    since = now - retention.invocation_age
    why = f"invocation records are kept {human(retention.invocation_age)} (invocation_age)"
    if records and len(records) >= retention.invocations and records[0].ts > since:
        since = records[0].ts
        why = (
            f"the store keeps a function's last {retention.invocations} invocation records "
            "(invocation_records)"
        )
    return since, why


class _Counts:
    """Calls and misses of one SLI at or after any time, by binary search."""

    def __init__(self, times: list[float], bad: list[bool]) -> None:
        self.times = times
        self.bad = [0, *accumulate(int(b) for b in bad)]

    def since(self, start: float) -> tuple[int, int]:
        """(calls, bad calls) at or after ``start``."""
        index = bisect.bisect_left(self.times, start)
        return len(self.times) - index, self.bad[-1] - self.bad[index]


def slo_report(
    key: str, slo: Slo, records: Sequence[Invocation], *, now: float, retention: Retention
) -> SloReport:
    """The report of function ``key`` (its records of the last 30 days, oldest first)."""
    ordered = sorted(records, key=lambda r: r.ts)
    since, why = _coverage(ordered, now, retention)
    times = [r.ts for r in ordered]
    notes: list[str] = []
    short = [w.name for w in SHOWN_WINDOWS if now - since < w.seconds - SLACK]
    if short:
        which = (
            f"the {', '.join(short)} windows cover"
            if len(short) > 1
            else f"the {short[0]} window covers"
        )
        notes.append(f"{which} only the last {human(now - since)}: {why}")
    slis: list[SliReport] = []
    for sli in slo.slis:
        if sli == "availability":
            bad = [is_error(r) for r in ordered]
        else:
            assert slo.latency is not None
            limit = slo.latency.threshold
            bad = [r.duration > limit for r in ordered]
        slis.append(_sli(sli, slo, _Counts(times, bad), now=now, since=since))
    if note := latency_note(slo):
        notes.append(note)
    name, tenant = split_key(key)
    return {"function": name, "tenant": tenant, "slis": slis, "notes": notes}


def _sli(sli: SliName, slo: Slo, counts: _Counts, *, now: float, since: float) -> SliReport:
    budget = slo.budget(sli)
    windows: dict[Window, WindowReport] = {}
    for window in ALL_WINDOWS:
        calls, bad = counts.since(now - window.seconds)
        ratio = bad / calls if calls else None
        windows[window] = {
            "window": window.name,
            "seconds": window.seconds,
            "covered": min(window.seconds, max(0.0, now - since)),
            "calls": calls,
            "good": calls - bad,
            "sli": None if ratio is None else 1.0 - ratio,
            "burn_rate": None if ratio is None else ratio / budget,
        }
    budget_burn = windows[BUDGET_WINDOW]["burn_rate"]
    alert: Severity | None = None
    for entry in POLICY:
        rates = (windows[entry.long]["burn_rate"], windows[entry.short]["burn_rate"])
        if all(rate is not None and rate > entry.factor for rate in rates):
            alert = "page" if entry.severity == "page" or alert == "page" else "ticket"
    latency = slo.latency if sli == "latency" else None
    return {
        "sli": sli,
        "objective": slo.objective(sli),
        "percentile": latency.name if latency else None,
        "threshold": latency.threshold if latency else None,
        "rules_threshold": boundary(latency.threshold) if latency else None,
        "windows": [windows[w] for w in SHOWN_WINDOWS],
        "budget_left": 1.0 if budget_burn is None else 1.0 - budget_burn,
        "alert": alert,
    }
