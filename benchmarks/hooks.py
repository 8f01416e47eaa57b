"""Git webhooks: from a push to the preview answering, against ``plat deploy``.

One daemon, one python function (``return "<text>"``, ``scale: {min: 0}``, public).

* **hook**: a bare repository whose ``post-receive`` script (real git runs it)
  POSTs a signed GitHub push delivery; ``git push`` of a one-line change to the
  branch ``bench`` starts the clock, which stops when the preview's host URL
  (``http://bench--NAME.localhost:<port>/``) answers the new text. In between:
  the delivery's signature check, ``git fetch --depth 1`` and ``git archive``, the
  build (a code-only change: the dependency layer is reused), the start and the
  swap;
* **plat deploy** (the baseline): the same one-line change written to a plain
  folder, ``plat deploy`` (CLI start-up included), until ``/function/NAME``
  answers the new text.

A first push and a first deploy (not timed) make the preview and the function;
then the two alternate, each round a fresh text. Target: hook ≤ 1.5 x deploy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.context import BenchError, Context
from benchmarks.daemon import Plat
from benchmarks.report import Figure, Section, Table, fmt

NAME = "hooks"
TITLE = "Git webhooks: push to preview against plat deploy"
RATIO_TARGET = 1.5
MANIFEST = (
    "name: {name}\nruntime: python\nhandler: handler.handle\nauth: public\nscale: {{min: 0}}\n"
)
HANDLER = 'def handle(event, context):\n    return "{text}"\n'
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
POST_RECEIVE = """#!{python}
import hashlib, hmac, json, sys, urllib.request, uuid
for line in sys.stdin:
    before, after, ref = line.split()
    body = json.dumps({{"ref": ref, "before": before, "after": after}}).encode()
    signature = hmac.new({secret!r}.encode(), body, hashlib.sha256).hexdigest()
    headers = {{"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
               "X-Hub-Signature-256": "sha256=" + signature,
               "Content-Type": "application/json"}}
    request = urllib.request.Request({url!r}, data=body, headers=headers, method="POST")
    urllib.request.urlopen(request, timeout=10).read()
"""


def git(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")


def answers(url: str, text: str, host: str | None, timeout: float) -> float:
    """Poll ``url`` until it answers ``text``; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    headers = {"Host": host} if host else {}
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.read().decode() == text:
                    return time.monotonic()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise BenchError(f"{url} did not answer {text!r} within {timeout:g} s")


def run(ctx: Context) -> Section:
    name = f"bhook{ctx.run_id[:6]}"
    rounds: int = ctx.pick(1, 5)
    bare, work, plain = ctx.work / "origin.git", ctx.work / "work", ctx.work / name
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=ctx.work)
    git("init", "--quiet", "--initial-branch=bench", str(work), cwd=ctx.work)
    git("remote", "add", "origin", str(bare), cwd=work)
    plain.mkdir()
    for folder in (work, plain):
        (folder / "plat.yaml").write_text(MANIFEST.format(name=name))
        (folder / "requirements.txt").write_text("")
    hook_times: list[float] = []
    deploy_times: list[float] = []
    with Plat(ctx.work, NAME, ctx.log) as plat:
        out = plat.cli("hook", "add", name, "--repo", str(bare), "--branch", "main", "--json")
        hook = json.loads(out.stdout)
        script = bare / "hooks" / "post-receive"
        script.write_text(
            POST_RECEIVE.format(python=sys.executable, secret=hook["secret"], url=hook["url"])
        )
        script.chmod(0o755)
        plat.deployed.append(f"{name}--bench")
        plat.built.add(f"{name}--bench")
        preview = f"http://127.0.0.1:{plat.port}/"
        host = f"bench--{name}.localhost:{plat.port}"
        for n in range(rounds + 1):
            text = f"round {n} {time.time()}"
            ctx.log(f"round {n}: push to bench")
            (work / "handler.py").write_text(HANDLER.format(text=text))
            git("add", "-A", cwd=work)
            git("commit", "--quiet", "-m", text, cwd=work)
            started = time.monotonic()
            git("push", "--quiet", "origin", "bench", cwd=work)
            took = answers(preview, text, host, timeout=300) - started
            ctx.log(f"round {n}: plat deploy")
            (plain / "handler.py").write_text(HANDLER.format(text=text))
            started = time.monotonic()
            plat.deploy(plain, name)
            deployed = answers(plat.function_url(name), text, None, timeout=300) - started
            if n:  # the first round makes the preview and the function
                hook_times.append(took)
                deploy_times.append(deployed)
        plat.cli("hook", "rm", name)
    return _section(hook_times, deploy_times)


def _section(hook_times: list[float], deploy_times: list[float]) -> Section:
    hook, deploy = statistics.median(hook_times), statistics.median(deploy_times)
    figure = Figure(
        "push → preview answers (median)",
        hook,
        "s",
        "plat deploy → answers",
        deploy,
        note=f"target ≤ {RATIO_TARGET:.1f}x",
    )
    rows = [
        [str(n + 1), fmt(h, "s"), fmt(d, "s"), f"{h / d:.2f}x" if d else "-"]
        for n, (h, d) in enumerate(zip(hook_times, deploy_times, strict=True))
    ]
    return Section(
        NAME,
        TITLE,
        method=__doc__ or "",
        figures=[figure],
        tables=[Table("rounds", ["round", "push → preview", "plat deploy", "ratio"], rows)],
    )
