"""plat's own kind of handler: ``handle(event, context)`` is served as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def adapt(target: Callable[..., Any], /) -> Callable[..., Any]:
    return target
