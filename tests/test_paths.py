"""plat.paths: the home folder, and the error when it cannot be written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from plat.credentials import ensure_password
from plat.errors import PlatError
from plat.paths import Home


def test_ensure_creates_private_folders(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    home.ensure()  # idempotent
    for path in (home.root, home.run_dir, home.builds_dir, home.cache_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_home_below_a_file_is_a_plat_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    home = Home(tmp_path / "file" / "home")
    with pytest.raises(PlatError) as info:
        home.ensure()
    assert str(home.root) in info.value.message
    assert info.value.hint and "PLAT_HOME" in info.value.hint
    with pytest.raises(PlatError, match="Not a directory"):
        ensure_password(home)


def test_holds(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    assert home.holds(tmp_path / "home")
    assert home.holds(str(tmp_path / "home" / "run" / "plat.sock"))
    assert not home.holds(tmp_path / "homer")
    assert not home.holds(None)
