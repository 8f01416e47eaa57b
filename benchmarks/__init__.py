"""plat's benchmark suite: ``python -m benchmarks`` writes ``docs/benchmarks.md``.

One module per benchmark (``warm``, ``builds``, ``scale``); each measures plat
and, in the same run, a baseline that does the same work without plat (the
instance directly, nginx, plain ``buildah build`` / ``podman run``), so every
figure in the report comes with its baseline and the ratio.

Shared machinery lives in :mod:`benchmarks.harness` (a plat daemon in a
temporary home, wrk, nginx, machine facts) and :mod:`benchmarks.report` (the
result model and its Markdown/JSON rendering); :mod:`benchmarks.suite` runs the
selected benchmarks.
"""

from __future__ import annotations
