"""The function's secrets as its handler reads them: ``context.secret("name")``.

plat puts each secret listed in ``plat.yaml`` in a read-only file named after it,
in the folder ``$PLAT_SECRETS_DIR`` names (``/var/plat/secrets`` in a container,
a private folder for a process instance; OpenFaaS's ``/var/openfaas/secrets``
holds the same files). A file is read on each call, never kept: a secret's value
lives only in the instance's tmpfs and the handler's own variables.
"""

from __future__ import annotations

import os

SECRETS_ENV = "PLAT_SECRETS_DIR"
DEFAULT_DIR = "/var/plat/secrets"


class SecretNotFoundError(LookupError):
    """The function has no secret of that name."""


def secrets_dir() -> str:
    return os.environ.get(SECRETS_ENV) or DEFAULT_DIR


def read_secret(name: str) -> bytes:
    """The bytes of secret ``name``; SecretNotFoundError when the function has none
    of that name, ValueError for a name that is not a file name."""
    if not isinstance(name, str) or not name or name in {".", ".."} or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a secret name (a name such as db-password)")
    path = os.path.join(secrets_dir(), name)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError):
        raise SecretNotFoundError(
            f"secret {name!r} is not available to this function ({path} does not exist); "
            f"list it under `secrets:` in plat.yaml and set it with `plat secret set {name}`"
        ) from None


def read_secret_text(name: str) -> str:
    data = read_secret(name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"secret {name!r} is not UTF-8 text; read it with context.secret_bytes({name!r})"
        ) from None
