"""Secrets read from HashiCorp Vault's KV v2 engine, with ``hvac``.

A reference ``"<mount>/<path>#<key>"`` (``secret/app#password``) is the key
``password`` of the secret at ``GET $VAULT_ADDR/v1/secret/data/app``, read with
``VAULT_TOKEN``. Both come from the environment mapping the daemon was given,
never from ``os.environ`` behind its back (hvac would read it, and
``~/.vault-token``, if it were handed no token). Proxies likewise: from that
mapping (``HTTPS_PROXY``, ``NO_PROXY``...), not requests' own look-ups.

hvac is blocking, so each read runs in a thread with a short timeout. Errors
never carry the token or a value: they name the reference, Vault's address and
what to check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import requests

from plat.daemon.hosts import is_loopback
from plat.errors import PlatError
from plat.manifest import parse_vault_ref

DEFAULT_TIMEOUT = 5.0


class VaultError(PlatError):
    """Vault answered, but not with the secret (refused, missing, malformed)."""

    status = 502
    code = "vault"


class VaultUnreachable(VaultError):
    """Vault did not answer (not set, refused, timed out)."""

    status = 503
    code = "vault_unreachable"


@dataclass(frozen=True)
class VaultRef:
    mount: str
    path: str
    key: str

    @classmethod
    def parse(cls, ref: str) -> VaultRef:
        try:
            return cls(*parse_vault_ref(ref))
        except ValueError as exc:
            raise VaultError(str(exc)) from None

    def __str__(self) -> str:
        return f"{self.mount}/{self.path}#{self.key}"


class VaultReader:
    """Reads KV v2 keys from the Vault that ``env`` names. Holds no connection."""

    def __init__(self, env: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.addr = env.get("VAULT_ADDR", "").strip().rstrip("/")
        self._token = env.get("VAULT_TOKEN", "").strip()
        self._namespace = env.get("VAULT_NAMESPACE") or None
        self._verify: bool | str = _verify(env)
        self._proxies = _proxies(self.addr, env)
        client_cert = (env.get("VAULT_CLIENT_CERT", ""), env.get("VAULT_CLIENT_KEY", ""))
        self._cert: tuple[str, str] | bool = client_cert if all(client_cert) else False
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"VaultReader(addr={self.where!r})"

    @property
    def where(self) -> str:
        """Vault's address without any user information, for messages."""
        parts = urlsplit(self.addr)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    async def read(self, ref: str | VaultRef) -> bytes:
        """The value at ``ref``: a string value as UTF-8, any other JSON value as
        its JSON text. Raises VaultUnreachable when Vault is not set or does not
        answer, VaultError when it answers without the value."""
        parsed = ref if isinstance(ref, VaultRef) else VaultRef.parse(ref)
        if not self.addr:
            raise VaultUnreachable(
                f"the secret {parsed} is in Vault, but VAULT_ADDR is not set",
                hint="start the daemon with VAULT_ADDR and VAULT_TOKEN in its environment",
            )
        if not self._token:
            raise VaultUnreachable(
                f"the secret {parsed} is in Vault, but VAULT_TOKEN is not set",
                hint="start the daemon with VAULT_TOKEN (a token that may read it)",
            )
        try:
            # The thread honours ``timeout`` through requests; this only bounds the wait.
            return await asyncio.wait_for(
                asyncio.to_thread(self._read, parsed), timeout=self.timeout * 3 + 1
            )
        except TimeoutError:
            raise self._unreachable(parsed, "it did not answer in time") from None

    def _read(self, ref: VaultRef) -> bytes:
        session = requests.Session()
        session.trust_env = False
        try:
            client = hvac.Client(
                url=self.addr,
                token=self._token,
                verify=self._verify,
                timeout=self.timeout,
                proxies=self._proxies,
                session=session,
                namespace=self._namespace,
                cert=self._cert,
            )
            answer = client.secrets.kv.v2.read_secret_version(
                path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True
            )
        except requests.Timeout:
            raise self._unreachable(ref, f"it did not answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            why = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
            raise self._unreachable(ref, why) from None
        except requests.RequestException as exc:
            raise self._unreachable(ref, type(exc).__name__) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise VaultError(
                f"Vault at {self.where} refused to give {ref.mount}/{ref.path} (permission denied)",
                hint=f"check VAULT_TOKEN, and that its policy allows `read` on "
                f"{ref.mount}/data/{ref.path}",
            ) from None
        except hvac.exceptions.InvalidPath:
            raise VaultError(
                f"Vault at {self.where} has no secret at {ref.mount}/{ref.path}",
                hint=f"check the path, and that {ref.mount}/ is a KV version 2 engine "
                f"(`vault kv get {ref.mount}/{ref.path}`)",
            ) from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.BadGateway):
            raise self._unreachable(ref, "it is sealed or unavailable") from None
        except hvac.exceptions.VaultError as exc:
            status = type(exc).__name__
            raise VaultError(
                f"Vault at {self.where} did not give {ref.mount}/{ref.path} ({status})"
            ) from None
        finally:
            session.close()
        return self._value(ref, answer)

    def _value(self, ref: VaultRef, answer: Any) -> bytes:
        try:
            data = answer["data"]["data"]
            if not isinstance(data, dict):
                raise TypeError
        except (TypeError, KeyError):
            raise VaultError(
                f"Vault's answer for {ref.mount}/{ref.path} is not a KV version 2 secret",
                hint=f"check that {ref.mount}/ is a KV version 2 engine",
            ) from None
        if ref.key not in data:
            keys = ", ".join(sorted(str(k) for k in data)[:20]) or "none"
            raise VaultError(
                f"the Vault secret {ref.mount}/{ref.path} has no key {ref.key!r} "
                f"(its keys: {keys})",
                hint="fix the part after '#' in plat.yaml",
            )
        value = data[ref.key]
        if isinstance(value, str):
            return value.encode()
        return json.dumps(value, separators=(",", ":")).encode()

    def _unreachable(self, ref: VaultRef, why: str) -> VaultUnreachable:
        return VaultUnreachable(
            f"cannot read {ref} from Vault at {self.where}: {why}",
            hint="check that Vault runs and VAULT_ADDR is right (`vault status`)",
        )


def _verify(env: Mapping[str, str]) -> bool | str:
    if env.get("VAULT_SKIP_VERIFY", "").lower() in {"1", "true", "yes"}:
        return False
    return env.get("VAULT_CACERT") or env.get("VAULT_CAPATH") or True


def _proxies(addr: str, env: Mapping[str, str]) -> dict[str, str]:
    """The proxy for ``addr`` from ``env``, as curl and requests pick it: none for
    loopback or a host NO_PROXY covers."""
    parts = urlsplit(addr)
    host = (parts.hostname or "").lower()
    scheme = parts.scheme or "https"

    def get(name: str) -> str:
        return env.get(name.upper()) or env.get(name.lower()) or ""

    proxy = get(f"{scheme}_proxy") or get("all_proxy")
    if not proxy or not host or is_loopback(host):
        return {}
    for raw in get("no_proxy").split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return {}
        entry = entry.lstrip("*").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return {}
    return {scheme: proxy}
