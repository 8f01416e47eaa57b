"""`plat doctor`: what this host can do, and how to fix what it cannot.

Two halves, kept apart so tests can feed in any host: :mod:`plat.doctor.host`
looks at the machine (subprocesses, files, sockets) and gathers the
:class:`~plat.doctor.facts.Facts`; :mod:`plat.doctor.checks` judges them into
report rows without touching anything. The command (`plat/commands/doctor.py`)
prints the rows.
"""
