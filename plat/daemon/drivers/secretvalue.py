"""A secret's value as it travels from the store to an instance's files.

``SecretValue`` never shows its bytes in a repr, a str or a log line: specs and
releases that carry secrets can be logged and compared without leaking them.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

# Where an instance finds its secrets: plat's path and OpenFaaS's, one file per secret.
SECRETS_DIR = "/var/plat/secrets"
OPENFAAS_SECRETS_DIR = "/var/openfaas/secrets"
SECRETS_PATHS = (SECRETS_DIR, OPENFAAS_SECRETS_DIR)
# The variable that names the folder of secret files (the process backend's differs).
SECRETS_ENV = "PLAT_SECRETS_DIR"


class SecretValue:
    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("SecretValue", len(self._value)))

    def __repr__(self) -> str:
        return "SecretValue(***)"

    __str__ = __repr__


Secrets = Mapping[str, SecretValue]
