"""Daemon settings, one declarative table.

Precedence: defaults < $PLAT_HOME/config.yaml < PLAT_* environment < flags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from plat.errors import PlatError
from plat.paths import Home
from plat.units import parse_duration, parse_size


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str

    @property
    def env(self) -> str:
        return "PLAT_" + self.name.upper()


def _port(value: Any) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("a port is 0..65535")
    return port


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError(f"use one of: {', '.join(choices)}")
        return str(value)

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


def _count(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _size(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


SETTINGS: tuple[Setting, ...] = (
    Setting("gateway_port", 8080, _port, "TCP port of the gateway on 127.0.0.1"),
    Setting("gateway_host", "127.0.0.1", str, "address the gateway binds (loopback by default)"),
    Setting("max_body", 6 * 1024**2, parse_size, "largest request body the gateway accepts"),
    Setting("head_timeout", 10.0, parse_duration, "a request head must arrive within this (408)"),
    Setting("body_timeout", 30.0, parse_duration, "a request body may stall this long (408)"),
    Setting(
        "max_connections",
        4096,
        _count,
        "open gateway connections at most (lowered to fit the open-file limit)",
    ),
    Setting("engine_host", None, str, "Docker Engine API endpoint (default: discovered)"),
    Setting(
        "backend",
        "auto",
        _choice("auto", "container", "process"),
        "where instances run: containers, local processes, or auto (containers if possible)",
    ),
    Setting(
        "instance_address",
        "published",
        _choice("published", "direct", "auto"),
        "how the gateway reaches container instances: a port published on 127.0.0.1, "
        "their bridge IP (direct; experimental), or auto (direct with a rootful engine on Linux)",
    ),
    Setting("builder", "auto", _choice("auto", "buildah", "engine"), "image builder"),
    Setting("ready_timeout", 30.0, parse_duration, "how long a new instance may take to be ready"),
    Setting("drain_timeout", 30.0, parse_duration, "bound on draining an old instance"),
    Setting("log_capture", True, _bool, "capture instances' stdout/stderr into the store"),
    Setting("log_rate", 2000.0, float, "log lines per second kept per instance; excess dropped"),
    Setting("log_lines", 10_000, _count, "log lines kept per function"),
    Setting("log_age", 7 * 86400.0, parse_duration, "how long log lines are kept"),
    Setting("log_trim_interval", 60.0, parse_duration, "how often retention trims the store"),
    Setting("invocation_records", 100_000, _count, "invocation records kept per function"),
    Setting("invocation_age", 7 * 86400.0, parse_duration, "how long invocation records are kept"),
    Setting("audit_records", 1_000_000, _count, "audit records kept (the oldest trimmed first)"),
    Setting("audit_age", 365 * 86400.0, parse_duration, "how long audit records are kept"),
    Setting("queue_limit", 256, _count, "requests that may wait per function before 429"),
    Setting("queue_timeout", 30.0, parse_duration, "longest a request waits for a slot"),
    Setting("autoscale_tick", 1.0, parse_duration, "how often the autoscaler decides"),
    Setting("target_utilization", 0.7, float, "share of scale.concurrency the scaler aims at"),
    Setting("stable_window", 60.0, parse_duration, "autoscaler averaging window"),
    Setting("panic_window", 6.0, parse_duration, "short window that detects bursts"),
    Setting("panic_threshold", 2.0, float, "burst factor (x current instances) that panics"),
    Setting("scale_down_rate", 2.0, float, "at most divide instances by this per tick"),
    Setting("scale_to_zero_after", 30.0, parse_duration, "idle time before min 0 reaches 0"),
    Setting("secrets_ttl", 60.0, parse_duration, "how often Vault secrets in use are read again"),
    Setting(
        "callback_hosts",
        "",
        str,
        "hosts (shell patterns, comma-separated) async callbacks may reach besides loopback",
    ),
    Setting("metrics_auth", False, _bool, "require basic auth on /metrics"),
    Setting("daemon_log_size", 10 * 1024**2, parse_size, "daemon.log rotates at this size"),
    Setting("daemon_log_files", 5, _count, "rotated daemon.log files kept (daemon.log.1 ...)"),
    Setting(
        "daemon_log_repeat",
        60.0,
        parse_duration,
        "a repeated daemon warning or error is written once per this interval, then counted",
    ),
    Setting(
        "standby_networks",
        32,
        _size,
        "standby containers whose network is set up ahead (Podman; ~0.4 MB each; 0: none)",
    ),
    Setting(
        "pool_size",
        2,
        _size,
        "pre-started generic instances kept per runtime in use (containers; 0 turns it off)",
    ),
)


@dataclass(frozen=True)
class Config:
    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def load_config(
    home: Home, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> Config:
    """Resolve every setting; raises PlatError naming the setting and its source."""
    by_name = {s.name: s for s in SETTINGS}
    sources: list[tuple[str, Mapping[str, Any]]] = []
    path = home.root / "config.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise PlatError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise PlatError(
                f"{path}: expected a mapping of settings",
                hint="write one `setting: value` per line, e.g. `gateway_port: 8080`",
            )
        unknown = sorted(set(data) - set(by_name))
        if unknown:
            raise PlatError(
                f"{path}: unknown setting {unknown[0]!r}",
                hint=f"known settings: {', '.join(by_name)}",
            )
        sources.append((str(path), data))
    sources.append(("environment", {s.name: env[s.env] for s in SETTINGS if s.env in env}))
    sources.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))
    values = {s.name: s.default for s in SETTINGS}
    for origin, mapping in sources:
        for name, raw in mapping.items():
            setting = by_name[name]
            try:
                values[name] = setting.parse(raw)
            except (ValueError, TypeError) as exc:
                where = setting.env if origin == "environment" else name
                raise PlatError(f"invalid {where} ({origin}): {exc}") from None
    return Config(values)
