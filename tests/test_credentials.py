"""plat.credentials: the generated admin password and the Basic auth check."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from plat.credentials import USER, basic_header, check_basic, ensure_password, read_password
from plat.errors import PlatError
from plat.paths import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


def test_password_file_created_private(home: Home) -> None:
    password = ensure_password(home)
    path = home.credentials
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"{USER}:{password}\n"
    assert len(password) >= 20


def test_password_stable_across_calls(home: Home) -> None:
    first = ensure_password(home)
    assert ensure_password(home) == first
    assert read_password(home) == first
    assert ensure_password(Home(home.root)) == first


def test_password_differs_between_homes(tmp_path: Path) -> None:
    assert ensure_password(Home(tmp_path / "a")) != ensure_password(Home(tmp_path / "b"))


def test_read_password_missing_file(home: Home) -> None:
    with pytest.raises(PlatError) as info:
        read_password(home)
    assert str(home.root) in info.value.message
    assert info.value.hint is not None
    assert "plat daemon start" in info.value.hint


@pytest.mark.parametrize("text", ["", "admin:\n", "root:secret\n", "secret\n"])
def test_read_password_malformed_file(home: Home, text: str) -> None:
    home.root.mkdir(parents=True)
    home.credentials.write_text(text)
    with pytest.raises(PlatError, match="malformed") as info:
        read_password(home)
    assert info.value.hint is not None
    assert "delete it" in info.value.hint


def test_basic_header_format() -> None:
    header = basic_header("s3cret")
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]) == b"admin:s3cret"
    assert base64.b64decode(basic_header("pw", user="bob")[6:]) == b"bob:pw"


def _token(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {_token('admin', 's3cret')}",
        f"basic {_token('admin', 's3cret')}",
        f"BASIC {_token('admin', 's3cret')}",
        f"bAsIc {_token('admin', 's3cret')}",
        f"  Basic {_token('admin', 's3cret')}  ",
        f"Basic  {_token('admin', 's3cret')}",
    ],
)
def test_check_basic_accepts(header: str) -> None:
    assert check_basic(header, basic_header("s3cret")) is True


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Basic",
        "Basic ",
        f"Basic {_token('admin', 'wrong')}",
        f"Basic {_token('admin', 's3cret ')}",
        f"Basic {_token('Admin', 's3cret')}",
        f"Basic {_token('root', 's3cret')}",
        f"Bearer {_token('admin', 's3cret')}",
        f"Digest {_token('admin', 's3cret')}",
        f"Basic{_token('admin', 's3cret')}",
        _token("admin", "s3cret"),
        "Basic admin:s3cret",
    ],
)
def test_check_basic_rejects(header: str | None) -> None:
    assert check_basic(header, basic_header("s3cret")) is False
