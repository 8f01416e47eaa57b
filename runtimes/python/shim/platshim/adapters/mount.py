"""Where the application is mounted, and who called it, as the gateway tells it.

plat's gateway serves a function at ``/function/<name>`` (``<name>.<tenant>`` for
a tenant's) and strips that prefix, or at the host ``<name>.localhost`` with the
whole path the function's. An application built for its own server (Flask's
``url_for``, Starlette's ``url_for``, Express routers) needs that prefix as its
mount point (WSGI ``SCRIPT_NAME``, ASGI ``root_path``), and the public host,
scheme and client address rather than the gateway's own: the gateway replaces
any ``X-Forwarded-For/-Host/-Proto`` a client sends, so they can be trusted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple


class Mount(NamedTuple):
    """What an adapter tells the application about the request's origin."""

    prefix: str  # "" or "/function/<key>", never ending in "/"
    host: str  # the Host the client used ("name:port")
    scheme: str  # "http" or "https"
    client: str  # the client's address ("" when unknown)


def function_prefix(function: str | None = None) -> str:
    """``/function/<key>`` of the function this instance serves (``PLAT_PREFIX`` wins)."""
    explicit = os.environ.get("PLAT_PREFIX")
    if explicit is not None:
        return explicit.rstrip("/")
    key = os.environ.get("PLAT_FUNCTION", "") if function is None else function
    return f"/function/{key}" if key else ""


def _host_routed(host: str, key: str) -> bool:
    """Whether ``host`` (``name:port``) is one the gateway routes to ``key`` by name."""
    name = host.rpartition(":")[0] if host.count(":") == 1 else host
    name = name.lower()
    if name == f"{key}.localhost":
        return True
    base, dashes, slug = key.partition("--")  # a preview: <slug>--<name>.localhost
    return bool(dashes) and name == f"{slug}--{base}.localhost"


def mount_of(headers: Mapping[str, str], prefix: str, key: str) -> Mount:
    """The Mount of one request; ``prefix`` is the function's path prefix, ``key`` its key."""
    forwarded_host = headers.get("x-forwarded-host")
    host = forwarded_host or headers.get("host") or "localhost"
    if forwarded_host and key and _host_routed(forwarded_host, key):
        prefix = ""
    proto = (headers.get("x-forwarded-proto") or "http").split(",")[0].strip().lower()
    scheme = proto if proto in ("http", "https") else "http"
    client = (headers.get("x-forwarded-for") or "").split(",")[0].strip()
    return Mount(prefix, host, scheme, client)


def split_host(host: str, scheme: str) -> tuple[str, int]:
    """(name, port) of a Host value; the scheme's port when it names none."""
    default = 443 if scheme == "https" else 80
    if host.startswith("["):  # [::1]:8080
        name, _, rest = host[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif host.count(":") == 1:
        name, _, port_text = host.partition(":")
    else:
        name, port_text = host, ""
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else default
    return name or "localhost", port
