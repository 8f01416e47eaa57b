"""The runtime shims under test, each described by what its tests need to know.

Every shim serves the same instance contract (docs/runtimes.md); a ``ShimKind``
holds the handlers that exercise it, written in the shim's language, and the
few ways in which the runtimes differ where the contract leaves room (error
names, where a stack trace shows, the wording of a missing-handler error).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import textwrap
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.runtimes import NODE_SHIM, PYTHON_SHIM, ServerProcess

NODE = shutil.which("node")


@dataclass(frozen=True)
class ShimKind:
    name: str
    command: tuple[str, ...]
    # The handler file the default PLAT_HANDLER names, and that default.
    handler_file: str
    default_handler: str
    # Serves the routes of the contract tests (/echo, /status, /boom, /slow, ...).
    handler: str
    # Serves the call-id routes (/context, /lines, /partial, ...).
    log_handler: str
    # The error the routes /boom and /reject end in.
    errors: Mapping[str, str]
    # A line of the stack trace that goes to stderr with a handler's error.
    stack_marker: str
    # A module that takes 0.6 s to fail at import (TypeError: broken at import): time
    # to see that nothing listens meanwhile.
    broken_module: str
    # A module that has no handler, and what the shim says about it.
    no_function_module: str
    no_function_message: str
    # The Connection header of a response on a kept-alive connection.
    keep_alive_connection: str | None
    # Fields of /echo that only this runtime's event has.
    echo_extras: Mapping[str, Any]
    # The line that /partial writes by a runtime-specific means (format: m).
    partial_line: str
    env: Mapping[str, str] = field(default_factory=dict)

    def start(self, folder: Path, handler: str | None = None, **env: str) -> ServerProcess:
        """The shim serving ``folder`` (not waited for)."""
        return ServerProcess(
            list(self.command),
            cwd=folder,
            logs=folder.parent / f"{folder.name}-logs",
            env={
                **self.env,
                "PLAT_HANDLER": handler or self.default_handler,
                "PLAT_FUNCTION": "shimtest",
                **env,
            },
        )

    def write(self, folder: Path, source: str, name: str | None = None) -> Path:
        """``folder`` with ``source`` as its handler file (or the file ``name``)."""
        return write_files(folder, {name or self.handler_file: source})


def write_files(folder: Path, files: Mapping[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@contextlib.contextmanager
def running(
    kind: ShimKind, folder: Path, handler: str | None = None, *, ready: bool = True, **env: str
) -> Iterator[ServerProcess]:
    """The shim serving ``folder``, listening unless ``ready`` is false; stopped on exit."""
    server = kind.start(folder, handler, **env)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.stop()


def served(
    kind: ShimKind, tmp_path_factory: pytest.TempPathFactory, source: str
) -> Iterator[ServerProcess]:
    """For a module-scoped fixture: the shim serving ``source``, for the module's tests."""
    folder = kind.write(tmp_path_factory.mktemp(f"{kind.name}shim") / "app", source)
    with running(kind, folder) as server:
        yield server


def call_with_ids(server: ServerProcess, path: str, ids: list[str]) -> list[str]:
    """The answers to concurrent GETs of ``path``, one per call id, then two without one."""

    def call(call_id: str) -> str:
        return server.request("GET", path, headers={"X-Call-Id": call_id} if call_id else {}).text

    with ThreadPoolExecutor(max_workers=len(ids) + 2) as pool:
        return list(pool.map(call, [*ids, "", ""]))


PYTHON_HANDLER = textwrap.dedent(
    """
    import json
    import sys
    import time

    CALLS = 0


    def handle(event, context):
        global CALLS
        CALLS += 1
        path = event.path
        if path == "/calls":
            return str(CALLS)
        if path.startswith("/echo"):
            return {
                "method": event.method,
                "path": event.path,
                "query": dict(event.query),
                "all_a": event.query.getlist("a"),
                "header": event.headers.get("x-test"),
                "header_item": event.headers["X-TEST"] if "x-test" in event.headers else None,
                "missing": event.headers.get("x-missing", "default"),
                "body": event.body.decode(),
                "json": event.json,
                "function": context.function,
                "hostname": context.hostname,
            }
        if path == "/status":
            return {"statusCode": 201, "headers": {"X-Custom": "yes"}, "body": {"ok": True}}
        if path == "/status-text":
            return {"statusCode": "418", "body": "teapot"}
        if path == "/bytes":
            return b"\\x00\\x01\\x02"
        if path == "/none":
            return None
        if path == "/list":
            return [1, 2, 3]
        if path == "/number":
            return 42
        if path == "/text":
            return "plain words"
        if path == "/boom":
            raise ValueError("secret detail 1234")
        if path == "/reject":
            async def rejected():
                raise TypeError("rejected detail")
            return rejected()
        if path == "/bad-header":
            return {"statusCode": 200, "headers": {"X-Bad": "a\\r\\nInjected: 1"}, "body": "x"}
        if path == "/unserializable":
            return {"when": object()}
        if path == "/slow":
            time.sleep(0.5)
            return "slow done"
        if path == "/print":
            print("to stdout from the handler", flush=True)
            print("to stderr from the handler", file=sys.stderr, flush=True)
            return "printed"
        return {"unknown": path}
    """
)

NODE_HANDLER = textwrap.dedent(
    """
    'use strict';
    let calls = 0;

    module.exports = async (event, context) => {
      calls += 1;
      const p = event.path;
      if (p === '/calls') return String(calls);
      if (p.startsWith('/echo')) {
        return {
          method: event.method,
          path: event.path,
          query: event.query,
          all_a: event.searchParams.getAll('a'),
          header: event.headers['x-test'] || null,
          body: event.body.toString('utf8'),
          isBuffer: Buffer.isBuffer(event.body),
          json: event.json === undefined ? null : event.json,
          function: context.function,
          hostname: context.hostname,
        };
      }
      if (p === '/status') {
        return { statusCode: 201, headers: { 'X-Custom': 'yes' }, body: { ok: true } };
      }
      if (p === '/status-text') return { statusCode: '418', body: 'teapot' };
      if (p === '/bytes') return Buffer.from([0, 1, 2]);
      if (p === '/none') return undefined;
      if (p === '/list') return [1, 2, 3];
      if (p === '/number') return 42;
      if (p === '/text') return 'plain words';
      if (p === '/boom') throw new RangeError('secret detail 1234');
      if (p === '/reject') return Promise.reject(new TypeError('rejected detail'));
      if (p === '/bad-header') {
        return { statusCode: 200, headers: { 'X-Bad': 'a\\r\\nInjected: 1' }, body: 'x' };
      }
      if (p === '/unserializable') return { when: 1n };
      if (p === '/slow') {
        await new Promise((resolve) => setTimeout(resolve, 500));
        return 'slow done';
      }
      if (p === '/print') {
        console.log('to stdout from the handler');
        console.error('to stderr from the handler');
        return 'printed';
      }
      return { unknown: p };
    };
    """
)

PYTHON_LOG_HANDLER = textwrap.dedent(
    """
    import logging
    import sys
    import time

    # A handler made at import time must write through the shim's tagging too.
    logging.basicConfig(format="%(levelname)s %(message)s")
    log = logging.getLogger("fn")
    # No handler and no propagation: logging's last-resort handler writes to sys.stderr.
    quiet = logging.getLogger("quiet")
    quiet.propagate = False


    def handle(event, context):
        path = event.path
        m = event.query.get("m", "")
        if path == "/context":
            return {"call_id": context.call_id, "request_id": context.request_id}
        if path == "/lines":
            print(f"line1 {m}")
            print(f"line2 {m}")
            sys.stderr.write(f"err {m}\\n")
            return "ok"
        if path == "/whoami":
            me = context.call_id or "none"
            for n in range(3):
                sys.stdout.write(f"who={me} ")
                time.sleep(0.005)
                print("n", n, "id", me)
            return me
        if path == "/partial":
            sys.stdout.write(f"multi1 {m}\\nmulti2 {m}\\n")
            sys.stdout.write(f"held {m} ")
            sys.stdout.write("joined\\n")
            sys.stdout.writelines([f"flushed {m} "])
            sys.stdout.flush()
            sys.stdout.write("continued\\n")
            sys.stdout.write(f"unfinished {m}")
            return "ok"
        if path == "/logging":
            log.warning("configured %s", m)
            quiet.warning("last resort %s", m)
            return "ok"
        if path == "/boom":
            raise ValueError(f"boom {m}")
        if path == "/streams":
            return {
                name: {
                    "fileno": stream.fileno(),
                    "isatty": stream.isatty(),
                    "encoding": stream.encoding,
                    "buffer": stream.buffer is not None,
                }
                for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr))
            }
        return {"unknown": path}
    """
)

NODE_LOG_HANDLER = textwrap.dedent(
    """
    'use strict';
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    module.exports = async (event, context) => {
      const p = event.path;
      const m = event.query.m || '';
      if (p === '/context') {
        return { call_id: context.call_id, request_id: context.requestId, callId: context.callId };
      }
      if (p === '/lines') {
        console.log(`line1 ${m}`);
        console.log(`line2 ${m}`);
        console.error(`err ${m}`);
        return 'ok';
      }
      if (p === '/whoami') {
        // Other calls run during every await, between and inside lines.
        const me = context.callId || 'none';
        for (let n = 0; n < 3; n += 1) {
          console.log(`before ${n} id=${me}`);
          await sleep(2 + ((n * 7 + me.length) % 11));
          process.stdout.write(`who=${me} `);
          await sleep(3);
          process.stdout.write(`again=${me}\\n`);
        }
        return me;
      }
      if (p === '/partial') {
        process.stdout.write(`multi1 ${m}\\nmulti2 ${m}\\n`);
        process.stdout.write(`held ${m} `);
        process.stdout.write('joined\\n');
        process.stdout.write(Buffer.from(`bytes ${m} \\u00e9\\n`));
        process.stdout.write(`unfinished ${m}`);
        return 'ok';
      }
      if (p === '/later') {
        setTimeout(() => console.log(`later ${m}`), 50);
        return 'ok';
      }
      if (p === '/boom') throw new RangeError(`boom ${m}`);
      return { unknown: p };
    };
    """
)

PYTHON = ShimKind(
    name="python",
    # -S, as the process backend runs it: no site-packages (the venv's OpenTelemetry
    # among them), so the handler sees the standard library and its own folder only.
    command=(sys.executable, "-S", str(PYTHON_SHIM)),
    handler_file="handler.py",
    default_handler="handler.handle",
    handler=PYTHON_HANDLER,
    log_handler=PYTHON_LOG_HANDLER,
    errors={"/boom": "ValueError", "/reject": "TypeError"},
    stack_marker="Traceback (most recent call last)",
    broken_module="import time\ntime.sleep(0.6)\nraise TypeError('broken at import')\n",
    no_function_module="def other(event, context):\n    return 1\n",
    no_function_message="has no attribute 'handle'",
    keep_alive_connection=None,
    echo_extras={"header_item": "yes", "missing": "default"},
    partial_line="flushed {m} continued",
    # As in the image: unbuffered, so each write is a system call and threads interleave.
    env={"PYTHONUNBUFFERED": "1"},
)

NODE_KIND = ShimKind(
    name="node",
    command=(NODE or "node", str(NODE_SHIM)),
    handler_file="handler.js",
    default_handler="handler.js",
    handler=NODE_HANDLER,
    log_handler=NODE_LOG_HANDLER,
    errors={"/boom": "RangeError", "/reject": "TypeError"},
    stack_marker="handler.js",
    broken_module="const end = Date.now() + 600; while (Date.now() < end) {}\n"
    "throw new TypeError('broken at import');\n",
    no_function_module="module.exports = {answer: 42};\n",
    no_function_message="does not export",
    keep_alive_connection="keep-alive",
    echo_extras={"isBuffer": True},
    partial_line="bytes {m} \u00e9",
)

KINDS = {kind.name: kind for kind in (PYTHON, NODE_KIND)}
