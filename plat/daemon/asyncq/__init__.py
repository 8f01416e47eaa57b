"""Queued calls: ``POST /async-function/<name>`` and cron ticks, kept in the store
until they are done, run through the gateway like any call, retried, reported.

:mod:`.ledger` commits the queue's writes in groups; :mod:`.invoker` makes one
attempt through the gateway, in process; :mod:`.queue` decides what runs when;
:mod:`.door` accepts calls on the gateway port; :mod:`.callbacks` delivers
results; :mod:`.cron` turns schedules into calls. See docs/async.md.
"""
