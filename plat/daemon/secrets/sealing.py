"""Secrets sealed at rest: AES-256-GCM under a key kept beside the store, not in it.

The key is 32 random bytes in ``$PLAT_HOME/secret.key`` (0600), made on first use.
A store copied without that file reveals nothing. Each sealed value is bound to
its tenant and name (the AEAD's associated data), so a row copied onto another
secret's name, or another tenant's, does not open.

Sealed form: one version byte, the 12-byte random nonce, the ciphertext with its
16-byte tag.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from plat.errors import PlatError

KEY_FILE = "secret.key"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FORMAT = b"\x01"


class SecretKeyError(PlatError):
    """The key file is unusable, or does not open what the store holds."""

    status = 500
    code = "secret_key"


class Sealer:
    """Seals and unseals secret values with one key. Holds the key in memory only."""

    def __init__(self, key: bytes, *, source: Path | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"a secret key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.source = source

    def __repr__(self) -> str:
        return f"Sealer(source={self.source})"

    @classmethod
    def from_home(cls, home_root: Path) -> Sealer:
        """The sealer of the key in ``home_root/secret.key``, made there first when
        there is none. Raises SecretKeyError when the file is unusable."""
        path = home_root / KEY_FILE
        return cls(load_or_create_key(path), source=path)

    def seal(self, tenant: str, name: str, value: bytes) -> bytes:
        nonce = _random.token_bytes(NONCE_BYTES)
        return FORMAT + nonce + self._aead.encrypt(nonce, bytes(value), _bound(tenant, name))

    def unseal(self, tenant: str, name: str, sealed: bytes) -> bytes:
        """The value of ``sealed``; raises SecretKeyError when this key (or this
        tenant and name) does not open it. Never shows the bytes."""
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES or sealed[:1] != FORMAT:
            raise self._refused(tenant, name, "it is not a sealed secret of this plat")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _bound(tenant, name))
        except InvalidTag:
            raise self._refused(tenant, name, None) from None

    def _refused(self, tenant: str, name: str, why: str | None) -> SecretKeyError:
        where = self.source or KEY_FILE
        reason = why or "was secret.key replaced, or the store copied from another home?"
        return SecretKeyError(
            f"the secret key ({where}) does not open secret {name!r} of tenant {tenant!r}: "
            f"{reason}",
            hint="restore the secret.key this store was sealed with, or set the secret "
            f"again: `plat secret set {name}`",
        )


def _bound(tenant: str, name: str) -> bytes:
    """The associated data: what a sealed value belongs to. NUL cannot occur in
    either part, so no two (tenant, name) pairs share it."""
    return b"plat-secret\x00" + tenant.encode() + b"\x00" + name.encode()


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; a new random one written there (0600) when the file
    does not exist. Two daemons racing to make it end with the same key: the file
    appears whole (linked into place) or not at all, and the loser reads the
    winner's. Raises SecretKeyError when the file is not a 32-byte file private to
    this user."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{_random.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, _random.token_bytes(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(temp, path)  # never replaces a key someone made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: a rename, nearly as good
            if not os.path.lexists(path):
                os.rename(temp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    hint = f"back up and remove {path} only if no secret was sealed with it"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretKeyError(
            f"cannot read the secret key {path}: {exc.strerror}",
            hint="it must be a regular file (not a link) readable by the daemon's user",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretKeyError(f"the secret key {path} is not a regular file", hint=hint)
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise SecretKeyError(
                f"the secret key {path} can be read by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); plat will not use it",
                hint=f"run `chmod 600 {path}` (and consider the secrets it seals exposed)",
            )
        if info.st_uid != os.geteuid():
            raise SecretKeyError(
                f"the secret key {path} belongs to another user (uid {info.st_uid})",
                hint=f"run the daemon as its owner, or `chown` it to uid {os.geteuid()}",
            )
        key = os.read(fd, KEY_BYTES + 1) if info.st_size == KEY_BYTES else b""
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise SecretKeyError(
            f"the secret key {path} holds {info.st_size} bytes, not {KEY_BYTES}: "
            "it is damaged or not a plat secret key",
            hint=f"restore it from a backup; {hint}",
        )
    return key
