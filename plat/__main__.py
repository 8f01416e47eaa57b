from __future__ import annotations

from plat.cli import main

main()
