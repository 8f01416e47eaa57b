"""Entry point of plat's Python runtime shim; the shim itself is the package platshim.

Imported in images (``python3 -P -S -c "import plat_shim; plat_shim.main()"``,
with this folder on PYTHONPATH) and run as a script by the process backend
(``python -S <this folder>/plat_shim.py``: the script's folder is then on
sys.path). The contract it serves is in platshim/__init__.py.
"""

from __future__ import annotations

from platshim.startup import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
