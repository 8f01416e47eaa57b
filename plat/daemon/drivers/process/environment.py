"""The environment of a process instance: a minimal one, not the daemon's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from plat.daemon.drivers.base import LOOPBACK, InstanceSpec
from plat.daemon.drivers.secretvalue import SECRETS_ENV

# Host variables an instance inherits; everything else of the daemon's
# environment stays out (credentials, PLAT_*, the daemon's own PYTHONPATH...).
PASSED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
)


def _prepend(first: str, rest: str | None) -> str:
    return f"{first}{os.pathsep}{rest}" if rest else first


def instance_environment(
    spec: InstanceSpec,
    artifact: Path,
    runtime: str,
    port: int,
    host_env: Mapping[str, str],
    secrets_dir: Path | None = None,
) -> dict[str, str]:
    """The environment of one instance (pure).

    A minimal base from ``host_env`` (PASSED_ENV), then ``spec.env`` (the
    manifest's env and ``PLAT_HANDLER``), then what plat sets: ``PORT``,
    ``PLAT_HOST``, ``PLAT_FUNCTION``, ``PLAT_VERSION``, the dependency path,
    which goes before a ``PYTHONPATH``/``NODE_PATH`` the manifest sets, and
    ``PLAT_SECRETS_DIR`` when the instance has secret files (``secrets_dir``; the
    variable names the folder, never a value).
    """
    env = {key: host_env[key] for key in PASSED_ENV if host_env.get(key)}
    env.setdefault("PATH", os.defpath)
    env.update(spec.env)
    deps = artifact / "deps"
    if runtime == "python":
        env["PYTHONPATH"] = _prepend(str(deps), spec.env.get("PYTHONPATH"))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
    elif runtime == "node":
        env["NODE_PATH"] = _prepend(str(deps / "node_modules"), spec.env.get("NODE_PATH"))
        # As in the node image: libraries pick their production behaviour.
        env.setdefault("NODE_ENV", "production")
    env.update(
        {
            "PORT": str(port),
            "PLAT_HOST": LOOPBACK,
            "PLAT_FUNCTION": spec.function,
            "PLAT_VERSION": spec.version,
        }
    )
    if secrets_dir is not None:
        env[SECRETS_ENV] = str(secrets_dir)
    return env
