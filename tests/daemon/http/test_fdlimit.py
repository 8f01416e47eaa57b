"""plat.daemon.http.fdlimit: the open-file budget of the gateway."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from plat.daemon.http.fdlimit import RESERVE, connection_cap


@pytest.mark.parametrize(
    ("wanted", "open_files", "cap"),
    [
        (4096, 1_048_576, 4096),
        (4096, resource.RLIM_INFINITY, 4096),
        (4096, 1024, (1024 - RESERVE) // 2),
        (4096, 512, (512 - RESERVE) // 2),
        (10, 512, 10),
        (4096, RESERVE, 1),
    ],
)
def test_the_cap_leaves_the_reserve_free(wanted: int, open_files: int, cap: int) -> None:
    assert connection_cap(wanted, open_files) == cap


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, soft)
    script = (
        "import resource\n"
        "from plat.daemon.http.fdlimit import raise_open_files\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard}))\n"
        "print(raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(hard), str(hard)]
