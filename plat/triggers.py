"""How a function is called besides a synchronous request: the ``async:`` block of
``plat.yaml`` (retries, backoff, timeout and queue limit of queued calls) and its
``schedule:`` (standard 5-field cron lines, each a queued call when it fires).

No import of the daemon: the CLI validates ``plat.yaml`` with this module.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plat.units import parse_duration

MAX_SCHEDULES = 16
MAX_DURATION = 3600.0
SCHEDULE_EXAMPLE = 'e.g. schedule: ["*/5 * * * *"] (minute hour day-of-month month day-of-week)'
# croniter's shorthands that mean a 5-field line; @reboot means nothing here.
_SHORTHANDS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def _duration(value: Any, what: str, *, zero: bool = False) -> float:
    try:
        seconds = float(parse_duration(value))
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    if seconds < 0 or (seconds == 0 and not zero) or seconds > MAX_DURATION:
        raise ValueError(f"{what} must be more than 0 and at most 1h")
    return seconds


class AsyncPolicy(BaseModel):
    """``async: {retries: 3, backoff: 1s, max_backoff: 60s, timeout: 30s, queue_limit: 1000}``.

    ``retries`` more attempts after the first on a 5xx, 429, timeout or failed
    instance, ``backoff`` doubling up to ``max_backoff`` (with jitter); ``timeout``
    of one attempt (the function's ``timeout`` when unset, and never more);
    ``queue_limit`` calls waiting at most (more are refused with 429).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(default=3, ge=0, le=100)
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float | None = None
    queue_limit: int = Field(default=1000, ge=1, le=1_000_000)

    @field_validator("backoff", "max_backoff", mode="before")
    @classmethod
    def _backoff(cls, value: Any) -> float:
        return _duration(value, "backoff")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else _duration(value, "timeout")

    def delay(self, attempt: int, jitter: float) -> float:
        """Seconds before attempt ``attempt + 1`` after ``attempt`` failed; ``jitter``
        in [0, 1) spreads retries of calls that failed together (half to all of it)."""
        base = min(self.max_backoff, self.backoff * 2 ** min(attempt - 1, 30))
        return base * (0.5 + jitter / 2)


def check_schedule(value: Any) -> list[str]:
    """The cron lines of ``schedule:``, each checked; raises ValueError naming the bad one."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"schedule must be a list of cron lines, {SCHEDULE_EXAMPLE}")
    if len(value) > MAX_SCHEDULES:
        raise ValueError(f"schedule has {len(value)} lines; at most {MAX_SCHEDULES}")
    out = []
    for line in value:
        if not isinstance(line, str):
            raise ValueError(f"schedule line {line!r} is not a string, {SCHEDULE_EXAMPLE}")
        text = " ".join(line.split())
        from croniter import croniter  # only for a schedule: ~15 ms of every CLI start

        if not (text in _SHORTHANDS or len(text.split(" ")) == 5) or not croniter.is_valid(text):
            raise ValueError(
                f"schedule line {line[:80]!r} is not a 5-field cron line, {SCHEDULE_EXAMPLE}"
            )
        out.append(text)
    return out


def next_tick(line: str, after: float) -> float:
    """The first time ``line`` fires after ``after`` (seconds since the epoch, UTC)."""
    from croniter import croniter

    return float(croniter(line, after).get_next(float))


def last_tick(line: str, at_or_before: float) -> float:
    """The latest time ``line`` fired at or before ``at_or_before``."""
    from croniter import croniter

    it = croniter(line, at_or_before + 1e-6)
    return float(it.get_prev(float))
