"""From a handler spec (``PLAT_HANDLER``) to the handler: import, look up, adapt."""

from __future__ import annotations

import importlib
import os
import sys

from platshim.adapters import AUTO, Handler, adapter, detect


def load_handler(spec: str, kind: str = "plat") -> Handler:
    """Import the handler named by ``spec`` (``module.func``, ``module:func``, ``file.py``).

    The working directory goes first on sys.path so the user's modules win. The
    callable found is served through the adapter of ``kind`` (see
    platshim.adapters; ``auto``: the kind ``detect`` sees in it). Raises
    ImportError/AttributeError/TypeError/LookupError (and whatever the module raises).
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif spec.endswith(".py") or "." not in spec:
        module_name, attr = spec, "handle"
    else:
        module_name, _, attr = spec.rpartition(".")
    module_name = module_name.removesuffix(".py").replace("/", ".")
    adapt = adapter(kind) if kind != AUTO else None
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = importlib.import_module(module_name)
    target = getattr(module, attr, None)
    if target is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        raise TypeError(f"{module_name}.{attr} is not callable")
    if adapt is None:
        adapt = adapter(detect(target, module_name, attr))
    return adapt(target)
