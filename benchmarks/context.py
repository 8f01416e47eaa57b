"""What every benchmark gets: its mode, a private work folder, a progress log.

Also the paths of the repository and the one error a benchmark raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

Log = Callable[[str], None]


class BenchError(Exception):
    """A benchmark could not run; the message says what failed."""


@dataclass
class Context:
    """What every benchmark gets: the mode, a private work folder and a progress log."""

    quick: bool
    work: Path
    run_id: str
    log: Log
    functions: int | None = None  # the scale benchmark's N, when not the mode's default

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full
