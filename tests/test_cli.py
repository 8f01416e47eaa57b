"""plat.cli: start-up cost and the edge that turns errors into exit codes (real processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plat import __version__
from tests.mounts import tmpfs

# The checkout under test, whatever the working directory of pytest.
REPO = Path(__file__).resolve().parents[1]

# Each costs tens of milliseconds to import; none is needed to build the app or print
# --version, so plat.cli and plat/commands import them inside the commands that use them.
HEAVY = (
    "rich",
    "pydantic",
    "docker",
    "requests",
    "aiohttp",
    "asyncio",
    "jinja2",
    "yaml",
    "watchfiles",
    "http.client",
    "plat.client",
    "plat.connect",
    "plat.console",
    "plat.manifest",
    "plat.runtimes",
    "plat.daemon.lifecycle",
)


def plat(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plat", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PLAT_HOME": str(home), "NO_COLOR": "1"},
    )


def test_building_the_app_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from plat.cli import app\n"
        "import typer.main\n"
        "typer.main.get_command(app)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.split()
    )
    assert sorted(loaded & set(HEAVY)) == []


def test_version(tmp_path: Path) -> None:
    result = plat("--version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"plat {__version__}\n"


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = plat("--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in (
        "init",
        "deploy",
        "dev",
        "invoke",
        "logs",
        "daemon",
        "doctor",
        "tenant",
        "secret",
        "slo",
    ):
        assert command in result.stdout
    # The global options that choose the daemon and the tenant, with their variables.
    for option in ("--tenant", "--url", "--token", "PLAT_TENANT", "PLAT_URL", "PLAT_TOKEN"):
        assert option in result.stdout
    assert "`ps`" in result.stdout  # why the variable is better than --token


@pytest.mark.parametrize("args", [["--no-such-option"], ["deploy", "--no-such-option"]])
def test_usage_error_exits_2_with_a_message(args: list[str], tmp_path: Path) -> None:
    result = plat(*args, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "No such option" in result.stderr
    assert "Traceback" not in result.stderr


def test_plat_error_exits_1_with_the_message(tmp_path: Path) -> None:
    # A folder without plat.yaml: the manifest check fails before the daemon is asked.
    result = plat("deploy", str(tmp_path), home=tmp_path / "home")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr


# An unusable $PLAT_HOME: real failures for root too (root ignores mode bits).


@pytest.fixture
def readonly_home(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs mount (EROFS); skipped only where mounting is not permitted."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mountpoint:
        yield mountpoint


def assert_home_error(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    assert "unexpected error" not in result.stderr and "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "PLAT_HOME" in result.stderr  # the fix: another home


@pytest.mark.parametrize("args", [["auth", "password"], ["daemon", "start"], ["ls"]])
def test_home_below_a_regular_file_is_a_clear_error(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "home"
    result = plat(*args, home=home)
    assert_home_error(result, home)
    assert "Not a directory" in result.stderr


@pytest.mark.parametrize("args", [["auth", "password"], ["daemon", "start"]])
def test_read_only_home_is_a_clear_error(readonly_home: Path, args: list[str]) -> None:
    result = plat(*args, home=readonly_home)
    assert_home_error(result, readonly_home)
    assert "Read-only file system" in result.stderr


def test_read_only_home_below_the_mount(readonly_home: Path) -> None:
    home = readonly_home / "plat-home"
    assert_home_error(plat("auth", "password", home=home), home)
