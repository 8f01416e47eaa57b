"""Preview functions: ``<name>--<branch-slug>``, one per branch of a hook, and
reached at ``/function/<name>--<slug>`` and ``http://<slug>--<name>.localhost``.

A slug is the branch in ``[a-z0-9-]``, runs of anything else made one ``-``, so
it never holds ``--`` and the host form splits back at its first ``--``
(:func:`plat.daemon.access.host_key`). The preview's name must stay a valid
function name (63 characters at most): a branch too long for that, or one whose
plain slug another branch of the hook already uses, gets a slug ending in a
digest of the branch's full name.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

from plat.tenancy import DEFAULT_TENANT, function_key

SEPARATOR = "--"
MAX_NAME = 63
DIGEST = 6
# The longest function name a hook with previews may have: room for "--" and a digest.
MAX_PREVIEWED_NAME = MAX_NAME - len(SEPARATOR) - DIGEST
_RUNS = re.compile(r"[^a-z0-9]+")


def slug(branch: str, room: int, *, hashed: bool = False) -> str:
    """``branch`` as ``[a-z0-9-]`` in at most ``room`` (>= DIGEST) characters; ``hashed``
    asks for the form with the digest even when the plain one fits."""
    clean = _RUNS.sub("-", branch.lower()).strip("-")
    if clean and len(clean) <= room and not hashed:
        return clean
    digest = hashlib.sha256(branch.encode()).hexdigest()[:DIGEST]
    keep = room - DIGEST - 1
    head = clean[:keep].rstrip("-") if keep > 0 else ""
    return f"{head}-{digest}" if head else digest


def preview_name(name: str, branch: str, *, hashed: bool = False) -> str:
    """The preview function of ``name`` for ``branch``."""
    room = MAX_NAME - len(name) - len(SEPARATOR)
    return f"{name}{SEPARATOR}{slug(branch, room, hashed=hashed)}"


def preview_urls(gateway_url: str, name: str, preview: str, tenant: str) -> tuple[str, str]:
    """(path URL, host URL) of ``preview`` (a preview of function ``name``)."""
    key = function_key(preview, tenant)
    parts = urlsplit(gateway_url)
    port = f":{parts.port}" if parts.port else ""
    host = f"{preview[len(name) + len(SEPARATOR) :]}{SEPARATOR}{name}"
    if tenant != DEFAULT_TENANT:
        host += f".{tenant}"
    return f"{gateway_url}/function/{key}", f"{parts.scheme}://{host}.localhost{port}/"
