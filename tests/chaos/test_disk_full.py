"""``$PLAT_HOME`` runs out of space under load, then space comes back.

The home is a small tmpfs (``mount -t tmpfs``: root only; skipped where mounting is
not permitted). A file fills it to the last byte while a function that prints a line
per call is loaded. Calls must keep being answered 200 (invocation records and log
lines that cannot be written are dropped, the daemon does not stop), and once the file
is removed the daemon writes again: new log lines reach ``plat logs`` within
:data:`RECOVERY_BOUND`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.support import Chaos, alive, assert_only_json_errors, chaos_session, wait_until
from tests.mounts import fill, tmpfs

pytestmark = pytest.mark.container

NAME = "chaos-disk"
MANIFEST = "scale: {min: 1, max: 2, concurrency: 8}\n"
HOME_SIZE = "64m"
RECOVERY_BOUND = 10.0


@contextlib.contextmanager
def home_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """``path`` as a fresh tmpfs of ``size``, its logs kept past the unmount."""
    with tmpfs(path, f"size={size},mode=0700"):
        try:
            yield path
        finally:
            # Keep the daemon's logs past the unmount, for a failure's investigation.
            with contextlib.suppress(OSError):
                shutil.copytree(path, path.parent / f"{path.name}-logs", ignore=_not_logs)


def _not_logs(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".log") and not Path(folder, n).is_dir()]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    tmp = tmp_path_factory.mktemp("disk")
    with home_tmpfs(tmp / "home", HOME_SIZE), chaos_session(tmp) as chaos:
        chaos.deploy(NAME, MANIFEST)
        yield chaos


def _logged(chaos: Chaos, marker: str) -> bool:
    return marker in chaos.plat.run("logs", NAME, "--tail", "200", check=False).stdout


@pytest.mark.timeout(120)
def test_a_full_home_drops_records_but_keeps_serving_then_recovers(
    chaos: Chaos, record_property: Callable[[str, object], None]
) -> None:
    home = chaos.plat.home
    daemon = chaos.daemon_pid()
    chaos.wait_ready(NAME, 1)
    assert chaos.plat.http("GET", f"/function/{NAME}/print?n=before").status == 200
    wait_until(lambda: _logged(chaos, "chaos line before"), RECOVERY_BOUND, "no log line")

    filler = home / "filler"
    fill(filler)
    try:
        with chaos.load(NAME, clients=16, seconds=3, paths=("/print?n=full",)) as load:
            full = load.wait()
        record_property("calls_while_full", full.total)
        assert alive(daemon), "the daemon died when its home filled up"
        assert_only_json_errors(full, allowed=())
        assert full.succeeded > 100, full.summary()
        chaos.plat.run("ls")  # the control API answers too
    finally:
        filler.unlink()

    with chaos.load(NAME, clients=8, seconds=1, paths=("/print?n=after",)) as load:
        after = load.wait()
    assert_only_json_errors(after, allowed=())
    # The journal writes again: lines printed after the space came back are stored.
    wait_until(
        lambda: _logged(chaos, "chaos line after"),
        RECOVERY_BOUND,
        "log lines printed after space came back never reached `plat logs`",
    )
    assert alive(daemon)
    chaos.assert_admission_settled(NAME)
    chaos.assert_no_orphans()
