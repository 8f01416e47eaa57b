"""plat.daemon.secrets.sealing: AES-GCM with the key file, bound to tenant and name."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plat.daemon.secrets.sealing import (
    KEY_BYTES,
    KEY_FILE,
    Sealer,
    SecretKeyError,
    load_or_create_key,
)
from plat.errors import PlatError

VALUE = b"correct horse battery staple"


def test_round_trip(sealer: Sealer) -> None:
    sealed = sealer.seal("default", "db-password", VALUE)
    assert VALUE not in sealed
    assert sealer.unseal("default", "db-password", sealed) == VALUE
    assert sealer.unseal("t", "empty", sealer.seal("t", "empty", b"")) == b""


def test_each_seal_has_its_own_nonce(sealer: Sealer) -> None:
    assert sealer.seal("default", "a", VALUE) != sealer.seal("default", "a", VALUE)


@pytest.mark.parametrize(
    ("tenant", "name"), [("default", "other"), ("acme", "db-password"), ("acme", "other")]
)
def test_a_sealed_value_opens_only_as_its_own_tenant_and_name(
    sealer: Sealer, tenant: str, name: str
) -> None:
    sealed = sealer.seal("default", "db-password", VALUE)
    with pytest.raises(SecretKeyError, match="does not open"):
        sealer.unseal(tenant, name, sealed)


def test_tenant_and_name_cannot_be_shifted_into_each_other(sealer: Sealer) -> None:
    # "ab" + "c" and "a" + "bc" must not share their associated data.
    sealed = sealer.seal("ab", "c", VALUE)
    with pytest.raises(SecretKeyError):
        sealer.unseal("a", "bc", sealed)


def test_a_wrong_key_is_a_clear_error(tmp_path: Path, sealer: Sealer) -> None:
    sealed = sealer.seal("default", "db-password", VALUE)
    other = Sealer.from_home(tmp_path / "other-home")
    with pytest.raises(PlatError) as info:
        other.unseal("default", "db-password", sealed)
    message = str(info.value)
    assert "does not open secret 'db-password'" in message
    assert "was secret.key replaced" in message
    assert "plat secret set db-password" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],
        lambda b: b[:10],
        lambda b: b"",
        lambda b: b"\x02" + b[1:],
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],
    ],
    ids=["truncated", "short", "empty", "format", "flipped-bit"],
)
def test_damaged_sealed_values_are_refused(sealer: Sealer, damage: object) -> None:
    sealed = sealer.seal("default", "a", VALUE)
    with pytest.raises(SecretKeyError, match="does not open"):
        sealer.unseal("default", "a", damage(sealed))  # type: ignore[operator]


def test_the_key_file_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == KEY_BYTES
    assert load_or_create_key(path) == key
    # Nothing left over from writing it.
    assert os.listdir(tmp_path) == [KEY_FILE]


def test_the_key_file_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / KEY_FILE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600


def test_daemons_racing_to_make_the_key_get_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    with ThreadPoolExecutor(16) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(path), range(64)))
    assert len(keys) == 1
    assert os.listdir(tmp_path) == [KEY_FILE]


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_file_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(SecretKeyError, match=f"holds {size} bytes, not 32"):
        Sealer.from_home(tmp_path)
    assert path.read_bytes() == b"k" * size  # never replaced


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / KEY_FILE
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(SecretKeyError, match="can be read by other users") as info:
        Sealer.from_home(tmp_path)
    assert f"chmod 600 {path}" in str(info.value)


def test_a_key_file_that_is_a_link_or_a_folder_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    load_or_create_key(real)
    home = tmp_path / "home"
    home.mkdir()
    (home / KEY_FILE).symlink_to(real)
    with pytest.raises(SecretKeyError, match="not a link"):
        Sealer.from_home(home)
    other = tmp_path / "other"
    (other / KEY_FILE).mkdir(parents=True)
    with pytest.raises(SecretKeyError):
        Sealer.from_home(other)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user takes root")
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    load_or_create_key(path)
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretKeyError, match="belongs to another user"):
        Sealer.from_home(tmp_path)


def test_the_sealer_never_shows_its_key(tmp_path: Path) -> None:
    sealer = Sealer.from_home(tmp_path)
    key = (tmp_path / KEY_FILE).read_bytes()
    assert key.hex() not in repr(sealer) and repr(key) not in repr(sealer)
