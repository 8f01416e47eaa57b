"""plat's Python runtime shim: an HTTP/1.1 server that calls the user's handler.

Started through ``plat_shim.py`` beside this package (imported in images,
run as a script by the process backend) with the function's folder as the
working directory. It depends on the standard library only, so it runs on any
Python >= 3.11 base image (python:3.12-slim, Debian bookworm's python3).

Contract (the instance contract of plat, see docs/runtimes.md):

* Environment: ``PLAT_HANDLER`` (``module.function``, default ``handler.handle``,
  resolved relative to the working directory), ``PORT`` (default 8080),
  ``PLAT_HOST`` (default 0.0.0.0), ``PLAT_FUNCTION``, ``PLAT_VERSION``,
  ``PLAT_WORKERS`` (threads for synchronous handlers, default 32).
* The handler module is imported before the port is bound. If the import fails
  the traceback goes to stderr and the process exits with status 1, so a broken
  deploy never looks ready.
* ``handle(event, context)`` gets ``event.body`` (bytes), ``event.headers``
  (case-insensitive), ``event.method``, ``event.query`` (first values;
  ``getlist`` for all) and ``event.path``; its return value becomes the response
  (str, bytes, None -> 204, ``{"statusCode", "headers", "body"}``, or any JSON
  value). ``async def`` handlers run on the event loop, plain ones in a thread
  pool, so one slow request never blocks the others.
* A request carrying ``X-Plat-Probe: 1`` is answered ``200 {"status":"ready"}``
  by the shim without calling the handler (``503 {"status":"stopping"}`` while
  draining; ``503 {"status":"busy"}`` with ``X-Plat-Status: busy`` while every
  handler thread is stuck, so the daemon can replace a wedged instance).
* A handler exception becomes ``500 {"error": "handler_error", ...}``; the
  traceback goes to stderr only.
* Call ids: a request's ``X-Call-Id`` header (``[A-Za-z0-9._-]{1,128}``, set by
  plat's gateway) is ``context.call_id``. While the call runs, every line written
  to ``sys.stdout``/``sys.stderr`` (print, logging, the shim's own traceback)
  starts with ``[call:<id>] ``, which plat's log collector strips and stores as
  the line's call id. Output outside calls is not tagged.
* Trace context: a valid W3C ``traceparent`` (version 00, lower-case hex, ids not
  all zero; set by plat's gateway) gives ``context.trace_id``,
  ``context.traceparent`` and ``context.tracestate`` (else all None), and the
  call's lines are tagged ``[call:<id> trace:<trace id>] ``. When the function
  has OpenTelemetry's SDK, its spans are written to fd 1 as ``plat-span:``
  lines (see ``handlerspans``), children of the request's traceparent.
* SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
  ``PLAT_SHUTDOWN_GRACE`` seconds, default 5), exit 0.
* Pool mode (``PLAT_POOL_TOKEN`` set): a generic, pre-started instance of the
  runtime image. It binds the port at once without a handler, answers probes,
  and 503 to anything else until the daemon POSTs ``/.plat/specialize`` with the
  token in ``X-Plat-Pool-Token`` and a JSON body ``{"function", "version",
  "handler", "env"}``; by then the daemon has placed the function's code in the
  working directory and its dependencies on the path (both mounted read-only).
  The shim sets ``env``, imports the handler and serves that function only; the
  endpoint is gone from then on. A failed import answers 500 with the error, and
  the daemon discards the instance.

Modules, one concept each:

* ``startup``: the entry point: environment, handler import, pool mode, exit.
* ``server``: connections, keep-alive, the probe and specialisation endpoints.
* ``invoker``: calls the handler (event loop or worker threads), errors -> 500.
* ``wire``: the HTTP/1.1 wire format, a small hand-written parser on asyncio
  streams: keep-alive, pipelining, Content-Length and chunked request bodies,
  ``Expect: 100-continue``; responses always carry Content-Length.
* ``event``: what the handler gets (``Event``, ``Context``).
* ``secretfiles``: ``context.secret(name)``: the files in ``$PLAT_SECRETS_DIR``
  (default ``/var/plat/secrets``).
* ``responses``: what the handler may return -> status, headers, body.
* ``output``: call ids on the lines of stdout/stderr, raw lines past them; the
  shim's error reports.
* ``tracing``: the request's ``traceparent``; whether handler spans are on.
* ``handlerspans``: the OpenTelemetry part, imported only when the function has it.
* ``loader`` and ``adapters``: from ``PLAT_HANDLER`` to a callable handler, and
  the place of adapters for other kinds of application (WSGI, ASGI, Lambda).

Nothing here is imported on import of the package itself: ``plat_shim`` imports
``platshim.startup``, which pulls in what a cold start needs and nothing more.
"""
