"""Handler adapters: from the object ``PLAT_HANDLER`` names to a plat handler.

A plat handler is ``handle(event, context)``, plain or ``async def`` (see
platshim.event), whose return value platshim.responses renders. A function
written for plat is one already: the kind "plat", the default. An application
written for another interface (a WSGI or an ASGI app, an AWS Lambda handler)
gets an adapter: a module of this package whose ``adapt(target)`` returns a
plat handler that translates the event in and the result out; the shim then
serves it like any other (``async def`` ones on the event loop, plain ones in
the worker threads). ADAPTERS names each kind's module, and only the kind in
use is imported, so no cold start pays for the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

# ``handle(event, context)``: returns a result, or an awaitable of one.
Handler = Callable[..., Any]


class Adapter(Protocol):
    def __call__(self, target: Callable[..., Any], /) -> Handler:
        """A plat handler that serves ``target``, the callable ``PLAT_HANDLER`` names."""
        ...


# kind -> the module of this package whose ``adapt`` is the kind's Adapter.
ADAPTERS: dict[str, str] = {"plat": "native"}


def adapter(kind: str) -> Adapter:
    """The adapter of ``kind``; raises LookupError for a kind that has none."""
    module = ADAPTERS.get(kind)
    if module is None:
        known = ", ".join(sorted(ADAPTERS))
        raise LookupError(f"no handler adapter for {kind!r} (known: {known})")
    adapt: Adapter = importlib.import_module(f"{__name__}.{module}").adapt
    return adapt
