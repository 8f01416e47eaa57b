"""Service level objectives: the ``slo:`` block of ``plat.yaml``, the burn-rate
policy every SLO is watched with, and the report the control API sends.

``slo: {availability: 99.9, latency: {p95: 300ms}}`` says: at least 99.9 % of
calls are not a 5xx, and at least 95 % of calls are answered in 300 ms or less,
both over 30 days. The policy is the Google SRE workbook's multi-window,
multi-burn-rate alerting (https://sre.google/workbook/alerting-on-slos/): the
daemon's report (``plat slo``) and the Prometheus rules (``plat slo rules``) use
the same windows and factors, defined once here.

No import of the daemon: the CLI validates ``plat.yaml`` with this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from plat.units import parse_duration

SliName = Literal["availability", "latency"]
Severity = Literal["page", "ticket"]

PERCENTILE_RE = re.compile(r"p([0-9]{1,2}(?:\.[0-9]{1,3})?)")
MAX_THRESHOLD = 3600.0  # the longest function timeout: no call runs longer
EXAMPLE = "e.g. slo: {availability: 99.9, latency: {p95: 300ms}}"


class Window(NamedTuple):
    name: str
    seconds: float


M5 = Window("5m", 300.0)
M30 = Window("30m", 1800.0)
H1 = Window("1h", 3600.0)
H2 = Window("2h", 7200.0)
H6 = Window("6h", 21600.0)
D1 = Window("1d", 86400.0)
D3 = Window("3d", 3 * 86400.0)
D30 = Window("30d", 30 * 86400.0)

# The window the error budget is counted over, and the windows `plat slo` shows.
BUDGET_WINDOW = D30
SHOWN_WINDOWS = (M5, H1, H6, D1, D30)


@dataclass(frozen=True)
class BurnAlert:
    """Alert when the error ratio over both ``long`` and ``short`` exceeds ``factor``
    times the budget (1 - objective). The short window makes the alert stop soon
    after the burning does."""

    severity: Severity
    factor: float
    long: Window
    short: Window


# The workbook's table 5-8, for a 30-day budget: paging at 14.4x spends 2 % of the
# budget in an hour, at 6x 5 % in six hours; a ticket at 3x spends 10 % in a day,
# at 1x 10 % in three days.
POLICY = (
    BurnAlert("page", 14.4, H1, M5),
    BurnAlert("page", 6.0, H6, M30),
    BurnAlert("ticket", 3.0, D1, H2),
    BurnAlert("ticket", 1.0, D3, H6),
)
ALL_WINDOWS = tuple(
    sorted(
        {*SHOWN_WINDOWS, *(w for a in POLICY for w in (a.long, a.short))}, key=lambda w: w.seconds
    )
)


def _number(value: Any, what: str) -> float:
    """``value`` as a finite float; ValueError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number such as 99.9, not {str(value)[:40]!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number")
    return number


def parse_percentile(key: Any) -> float:
    """95.0 from ``"p95"`` (99.9 from ``"p99.9"``); ValueError for anything else."""
    match = PERCENTILE_RE.fullmatch(key) if isinstance(key, str) else None
    percentile = float(match.group(1)) if match else 0.0
    if not 0 < percentile < 100:
        raise ValueError(
            f"unknown percentile {str(key)[:40]!r}; write pNN with 0 < NN < 100, "
            "e.g. p50, p95, p99 or p99.9"
        )
    return percentile


def percentile_name(percentile: float) -> str:
    return f"p{percentile:g}"


class Latency(BaseModel):
    """At least ``percentile`` % of calls take ``threshold`` seconds or less.

    Written in plat.yaml as one ``pNN: duration`` entry, and dumped the same way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    percentile: float
    threshold: float

    @property
    def name(self) -> str:
        return percentile_name(self.percentile)

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, float]:
        return {self.name: self.threshold}


class Slo(BaseModel):
    """The ``slo:`` block: ``availability`` (a percentage of calls that are not a
    5xx) and ``latency`` (one percentile and its threshold); at least one of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    availability: float | None = None
    latency: Latency | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict | Slo):
            raise ValueError(f"slo must be a mapping, {EXAMPLE}")
        return value

    @model_validator(mode="after")
    def _something(self) -> Slo:
        if self.availability is None and self.latency is None:
            raise ValueError(f"slo sets no objective; set availability, latency or both, {EXAMPLE}")
        return self

    @field_validator("availability", mode="before")
    @classmethod
    def _availability(cls, value: Any) -> float | None:
        if value is None:
            return None
        number = _number(value, "availability (a percentage)")
        if number >= 100:
            raise ValueError(
                f"availability {value:g} leaves no error budget: any failure breaks it; "
                "use a percentage below 100, e.g. 99.9"
            )
        if number <= 0:
            raise ValueError(
                f"availability {value:g} is no objective; use a percentage above 0, e.g. 99.9"
            )
        return number

    @field_validator("latency", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        if value is None or isinstance(value, Latency):
            return value
        if not isinstance(value, dict) or len(value) != 1:
            got = f"{len(value)} entries" if isinstance(value, dict) else repr(value)[:40]
            raise ValueError(
                f"latency takes one percentile and its threshold, e.g. {{p95: 300ms}}; got {got}"
            )
        ((key, duration),) = value.items()
        percentile = parse_percentile(key)
        try:
            threshold = parse_duration(duration)
        except (ValueError, OverflowError, TypeError) as exc:
            raise ValueError(f"{key}: {exc}") from None
        if threshold > MAX_THRESHOLD:
            raise ValueError(f"{key}: the threshold must be at most 1h (no call runs longer)")
        return {"percentile": percentile, "threshold": threshold}

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only what is set, so a dump validates back to the same Slo.
        data: dict[str, Any] = handler(self)
        return {key: item for key, item in data.items() if item is not None}

    def budget(self, sli: SliName) -> float:
        """The share of calls that may miss the objective: 1 - objective."""
        return 1.0 - self.objective(sli) / 100.0

    def objective(self, sli: SliName) -> float:
        """The objective of ``sli`` as a percentage; KeyError when it has none."""
        if sli == "availability" and self.availability is not None:
            return self.availability
        if sli == "latency" and self.latency is not None:
            return self.latency.percentile
        raise KeyError(sli)

    @property
    def slis(self) -> list[SliName]:
        """The SLIs this SLO sets an objective for, availability first."""
        out: list[SliName] = []
        if self.availability is not None:
            out.append("availability")
        if self.latency is not None:
            out.append("latency")
        return out


# What the control API answers (GET /v1/slo), read by `plat slo`.


class WindowReport(TypedDict):
    window: str  # "5m"
    seconds: float
    covered: float  # seconds of the window the kept invocation records reach back
    calls: int
    good: int  # calls that met the objective
    sli: float | None  # good / calls; None without calls
    burn_rate: float | None  # (1 - sli) / (1 - objective)


class SliReport(TypedDict):
    sli: SliName
    objective: float  # a percentage: 99.9
    percentile: str | None  # latency: "p95"
    threshold: float | None  # latency: seconds, as plat.yaml says
    rules_threshold: float | None  # latency: the histogram boundary the Prometheus rules use
    windows: list[WindowReport]
    budget_left: float  # share of the 30-day budget left: 1 untouched, below 0 overspent
    alert: Severity | None  # the most severe POLICY entry whose both windows burn too fast


class SloReport(TypedDict):
    function: str
    tenant: str
    slis: list[SliReport]
    notes: list[str]


class SloAnswer(TypedDict):
    functions: list[SloReport]
    invocation_records: int  # retention: records kept per function
    invocation_age: float  # retention: seconds records are kept


class RulesAnswer(TypedDict):
    """GET /v1/slo/rules?format=json; without it the route answers the YAML alone."""

    yaml: str
    functions: int
    rules: int
    notes: list[str]
