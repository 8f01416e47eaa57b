"""Who may call a function through the gateway, and which function a host names.

A ``public`` function is open. A ``basic`` one takes the admin's Basic
credentials, the admin token, or a token of the function's own tenant (Bearer,
or Basic with the tenant's name as user and the token as password). A valid
token of *another* tenant gets a 404, as if the function did not exist: a
tenant learns nothing about the others' names.

Host routing: ``<name>.localhost`` names a function of the ``default`` tenant,
``<name>.<tenant>.localhost`` one of another tenant (``*.localhost`` resolves to
loopback), with or without a port. A git hook's preview ``<name>--<slug>`` is
also ``<slug>--<name>[.<tenant>].localhost`` (a slug never holds ``--``, so the
host splits at its first).
"""

from __future__ import annotations

import hmac
from collections.abc import Container

from plat.credentials import check_basic
from plat.daemon.control.scope import bearer_principal
from plat.daemon.tenants import ADMIN, Principal, Tenants
from plat.tenancy import tenant_of

LOCALHOST = b".localhost"
PREVIEW = b"--"  # <slug>--<name>: a preview (plat.daemon.hooks.previews)
# Authorization headers whose tenant is known, kept until a token changes: a
# tenant's call then costs a dict lookup, not a hash. Bounded, and only valid
# tokens get in, so a flood of made-up tokens cannot grow it.
KNOWN_MAX = 1024


class Access:
    def __init__(self, auth_header: str, tenants: Tenants | None = None) -> None:
        """``auth_header``: the admin's ``Basic ...`` header value."""
        self.auth_header = auth_header
        self.tenants = tenants
        self._auth = auth_header.encode()
        self._known: dict[bytes, Principal] = {}
        self._generation = 0

    def allows(self, header: bytes | None, key: str) -> bool | None:
        """Whether ``header`` may call the ``basic`` function ``key``; None for the
        token of another tenant (to be answered 404)."""
        if header is None:
            return False
        if hmac.compare_digest(header, self._auth):  # the usual case first: no decoding
            return True
        principal = self._principal(header)
        if principal is None:
            return False
        return True if principal.admin or principal.tenant == tenant_of(key) else None

    def _principal(self, header: bytes) -> Principal | None:
        """Who the header stands for: the admin (Basic or token), a tenant, or None."""
        tenants = self.tenants
        if tenants is not None and tenants.generation != self._generation:
            self._known.clear()
            self._generation = tenants.generation
        principal = self._known.get(header)
        if principal is not None:
            return principal
        text = header.decode("latin-1")
        if check_basic(text, self.auth_header):
            return ADMIN
        if tenants is None:
            return None
        principal = bearer_principal(text, tenants, self.auth_header)
        if principal is not None:
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
            self._known[header] = principal
        return principal


def host_key(host: bytes, deployed: Container[str]) -> bytes | None:
    """The deployed function a ``<name>[.<tenant>].localhost[:port]`` host names."""
    name = host.lower()
    colon = name.rfind(b":")
    if colon != -1:
        name = name[:colon]
    if not name.endswith(LOCALHOST):
        return None
    key = name[: -len(LOCALHOST)]
    if key and key.decode("latin-1") in deployed:
        return key
    slug, separator, rest = key.partition(PREVIEW)
    if slug and separator and rest:
        label, dot, tenant = rest.partition(b".")
        preview = label + PREVIEW + slug + dot + tenant
        if preview.decode("latin-1") in deployed:
            return preview
    return None
