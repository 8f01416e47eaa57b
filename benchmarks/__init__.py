"""plat's benchmark suite: ``python -m benchmarks`` writes ``docs/benchmarks.md``.

One module per benchmark (``warm``, ``builds``, ``scale``); each measures plat
and, in the same run, a baseline that does the same work without plat (the
instance directly, nginx, plain ``buildah build`` / ``podman run``), so every
figure in the report comes with its baseline and the ratio.

Shared machinery, one module a concept: :mod:`benchmarks.context` (what each
benchmark gets, :class:`BenchError`), :mod:`benchmarks.daemon` (a plat daemon
in a temporary home), :mod:`benchmarks.functions` (function folders),
:mod:`benchmarks.wrk` and :mod:`benchmarks.nginx` (the load generator and the
baseline proxy), :mod:`benchmarks.load` (a load generator that records every
outcome), :mod:`benchmarks.shell`, :mod:`benchmarks.net`,
:mod:`benchmarks.procfs` and :mod:`benchmarks.stats` (commands, HTTP probes,
process figures, summary statistics), :mod:`benchmarks.machine` (machine facts
and tool versions) and :mod:`benchmarks.report` (the result model and its
Markdown/JSON rendering); :mod:`benchmarks.suite` runs the selected benchmarks.
"""

from __future__ import annotations
