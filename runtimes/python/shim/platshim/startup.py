"""The shim's entry point: read the environment, load the handler, serve, exit."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import NoReturn

from platshim.adapters import AUTO
from platshim.invoker import Invoker
from platshim.loader import load_handler
from platshim.output import log_error, tag_output
from platshim.server import Shim


def main() -> None:
    """Serve the function of ``PLAT_HANDLER`` (or, with ``PLAT_POOL_TOKEN``, wait for one).

    Exits 1 when the handler cannot be loaded, before the port is bound.
    """
    spec = os.environ.get("PLAT_HANDLER") or "handler.handle"
    # Before the import, so that logging handlers made at import time write through the tags.
    tag_output()
    host = os.environ.get("PLAT_HOST") or "0.0.0.0"
    port = int(os.environ.get("PORT") or "8080")
    invoker = Invoker(int(os.environ.get("PLAT_WORKERS", "32")))
    # Out of the environment, so that the function's code never sees it.
    pool_token = os.environ.pop("PLAT_POOL_TOKEN", "")
    if pool_token:
        run(Shim(invoker, pool_token=pool_token), host, port)
    try:
        handler = load_handler(spec, adapter_kind())
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        log_error(
            f"cannot load the handler {spec!r} from {os.getcwd()} "
            f"({type(exc).__name__}: {exc}); the function will not start",
            exc,
        )
        sys.exit(1)
    function = os.environ.get("PLAT_FUNCTION", "")
    invoker.use(handler, function, os.environ.get("PLAT_VERSION", ""), spec)
    run(Shim(invoker), host, port)


def adapter_kind() -> str:
    """The handler's kind: ``PLAT_ADAPTER`` (plat.yaml's ``adapter``), else detected."""
    return os.environ.get("PLAT_ADAPTER") or AUTO


def run(shim: Shim, host: str, port: int) -> NoReturn:
    asyncio.run(shim.serve(host, port))
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a handler thread that is still stuck must not hold up the exit
    # (ThreadPoolExecutor joins its threads at interpreter shutdown).
    os._exit(0)
