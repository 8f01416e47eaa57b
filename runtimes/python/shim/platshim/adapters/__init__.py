"""Handler adapters: from the object ``PLAT_HANDLER`` names to a plat handler.

A plat handler is ``handle(event, context)``, plain or ``async def`` (see
platshim.event), whose return value platshim.responses renders. A function
written for plat is one already: the kind "plat", the default. An application
written for another interface (a WSGI or an ASGI app, an AWS Lambda handler)
gets an adapter: a module of this package whose ``adapt(target)`` returns a
plat handler that translates the event in and the result out; the shim then
serves it like any other (``async def`` ones on the event loop, plain ones in
the worker threads). An adapter's handler may return a ``Reply`` (platshim.
adapters.reply): a response it rendered itself, whose body may be a stream.
ADAPTERS names each kind's module, and only the kind in use is imported, so no
cold start pays for the others (nor imports the application's framework).

The kind is ``PLAT_ADAPTER`` (plat.yaml's ``adapter:``) when set, else
``detect``'s conservative guess from the object itself (docs/runtimes.md).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Protocol

# ``handle(event, context)``: returns a result, or an awaitable of one.
Handler = Callable[..., Any]


class Adapter(Protocol):
    def __call__(self, target: Callable[..., Any], /) -> Handler:
        """A plat handler that serves ``target``, the callable ``PLAT_HANDLER`` names."""
        ...


class LifespanHandler:
    """A handler with work to do before its first call and after its last.

    The shim awaits ``startup`` before the instance is ready (before the port is
    bound, or before a pool instance answers its specialisation) and ``shutdown``
    after the drain on SIGTERM. ``startup`` raising ``StartupFailed`` keeps the
    instance from ever becoming ready.
    """

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class StartupFailed(Exception):
    """The application said it cannot start; the message is the application's."""


# kind -> the module of this package whose ``adapt`` is the kind's Adapter.
ADAPTERS: dict[str, str] = {
    "plat": "native",
    "wsgi": "wsgi",
    "asgi": "asgi",
    "lambda": "aws_lambda",
}
AUTO = "auto"


def adapter(kind: str) -> Adapter:
    """The adapter of ``kind``; raises LookupError for a kind that has none."""
    module = ADAPTERS.get(kind)
    if module is None:
        known = ", ".join(sorted(ADAPTERS))
        raise LookupError(f"no handler adapter for {kind!r} (known: {known})")
    adapt: Adapter = importlib.import_module(f"{__name__}.{module}").adapt
    return adapt


def _positional(target: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """The parameters a caller fills by position, or None when none can be read."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in params if p.kind in kinds]


def _is_async(target: Callable[..., Any]) -> bool:
    # An object whose __call__ is ``async def`` (a FastAPI app) counts too.
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)


def detect(target: Callable[..., Any], module: str, attr: str) -> str:
    """The kind of ``target`` (``module.attr``), guessed conservatively.

    * ``asgi``: an ``async`` callable of exactly three positional parameters
      (``scope, receive, send``): FastAPI, Starlette, Quart, an ``async def app``.
    * ``wsgi``: an object with a ``wsgi_app`` (Flask), or a callable of two
      positional parameters the second of which is ``start_response`` (Django,
      Bottle, Falcon, Pyramid, a plain WSGI function).
    * ``lambda``: the attribute is named ``lambda_handler`` or the module
      ``lambda_function`` (AWS's own defaults).
    * ``plat`` otherwise: every ``handle(event, context)`` stays what it was.
    """
    params = _positional(target)
    if params is not None and len(params) == 3 and _is_async(target):
        return "asgi"
    if not inspect.isfunction(target) and callable(getattr(target, "wsgi_app", None)):
        return "wsgi"
    if params is not None and len(params) == 2 and params[1].name == "start_response":
        return "wsgi"
    if attr == "lambda_handler" or module.rpartition(".")[2] == "lambda_function":
        return "lambda"
    return "plat"
