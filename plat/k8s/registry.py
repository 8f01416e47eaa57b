"""A function's image in an OCI registry: where it goes, and what the push route
and the CLI say to each other about it (typed once, imported by both sides).

``plat push NAME --registry HOST[:PORT][/prefix]`` pushes the version's image to
``HOST[:PORT][/prefix]/NAME:VERSION`` (a tenant's function under
``.../TENANT/NAME:VERSION``); the daemon answers with NDJSON ``PushEvent`` lines
and keeps a ``PushRecord`` of each push for ``plat k8s render`` and
``plat deploy --target k8s``.
"""

from __future__ import annotations

import re
from typing import Literal, TypedDict

from plat.errors import PlatError
from plat.tenancy import DEFAULT_TENANT

MAX_REGISTRY = 255
# A registry host (a DNS name, IPv4, or [IPv6]) with an optional port, then
# repository path components as the distribution spec allows them.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_PORT = r"(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REGISTRY_RE = re.compile(rf"({_HOST}{_PORT})((?:/{_COMPONENT})*)")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class PushRecord(TypedDict):
    """One push of a function's version: ``reference`` is ``repo:version@digest``."""

    function: str
    tenant: str
    version: str
    registry: str
    repository: str
    digest: str
    reference: str
    pushed_at: float


class PushLog(TypedDict):
    type: Literal["log"]
    line: str


class PushPhase(TypedDict):
    type: Literal["phase"]
    message: str


class PushDone(TypedDict):
    type: Literal["pushed"]
    push: PushRecord


class PushError(TypedDict, total=False):
    type: Literal["error"]
    error: str
    message: str
    hint: str


PushEvent = PushLog | PushPhase | PushDone | PushError


def parse_registry(value: str) -> str:
    """``value`` checked as ``HOST[:PORT][/prefix]``, without a trailing slash;
    raises PlatError naming the problem (a scheme, spaces, upper case in the path)."""
    text = value.strip().rstrip("/")
    if not text:
        raise PlatError("--registry is empty; give HOST[:PORT][/prefix], e.g. localhost:5000")
    if len(text) > MAX_REGISTRY:
        raise PlatError(f"--registry is longer than {MAX_REGISTRY} characters")
    if "://" in text:
        raise PlatError(
            f"--registry {text[:80]!r} has a scheme; give HOST[:PORT][/prefix]",
            hint=f"drop {text.split('://', 1)[0]}://; "
            "use --no-tls-verify for a plain-HTTP registry",
        )
    match = REGISTRY_RE.fullmatch(text)
    if match is None or _bad_port(match.group(1)):
        raise PlatError(
            f"--registry {text[:80]!r} is not HOST[:PORT][/prefix]",
            hint="e.g. localhost:5000, registry.example.com/team (path parts in lower case)",
        )
    return text


def _bad_port(host: str) -> bool:
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else None
    return port is not None and not 0 < int(port) < 65536


def repository(registry: str, name: str, tenant: str = DEFAULT_TENANT) -> str:
    """Where a function's images go in ``registry``: one repository per function
    (a tenant's under a folder of the tenant's name)."""
    return f"{registry}/{name}" if tenant == DEFAULT_TENANT else f"{registry}/{tenant}/{name}"


def pushed_reference(repo: str, version: str, digest: str) -> str:
    """``repo:version@digest``: readable, and pinned (the digest wins when pulled)."""
    if not DIGEST_RE.fullmatch(digest):
        raise PlatError(f"the registry reported a malformed digest {digest[:80]!r}")
    return f"{repo}:{version}@{digest}"
