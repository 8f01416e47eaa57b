"""Tenants and function keys: how a function of a tenant is named inside plat.

A function is known to the daemon by its *key*: its name for the built-in tenant
``default`` (so every wave-1 URL, label and record keeps its meaning), and
``<name>.<tenant>`` for any other tenant (OpenFaaS's ``name.namespace`` form, the
gateway's ``/function/<name>.<tenant>``). Names and tenants are DNS labels, so a
key splits back unambiguously at its one dot.
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
TENANT_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
MAX_TENANT = 32


def function_key(name: str, tenant: str = DEFAULT_TENANT) -> str:
    """The daemon's key of function ``name`` of ``tenant``."""
    return name if tenant == DEFAULT_TENANT else f"{name}.{tenant}"


def split_key(key: str) -> tuple[str, str]:
    """(name, tenant) of a function key."""
    name, _, tenant = key.partition(".")
    return name, tenant or DEFAULT_TENANT


def tenant_of(key: str) -> str:
    return split_key(key)[1]


def valid_tenant(name: str) -> bool:
    return TENANT_RE.fullmatch(name) is not None
