"""A real git repository for the hook tests: a bare ``origin.git`` whose
``post-receive`` hook (a real script, run by git on every push) POSTs a signed
delivery of each pushed ref in a provider's format, and a working clone to push from.

The script writes each answer (status and body) as a JSON line to
``origin.git/deliveries.jsonl``, so a test can see what plat answered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

POST_RECEIVE = r"""#!{python}
# post-receive: one signed webhook delivery per pushed ref, as {provider} sends them.
import hashlib, hmac, json, sys, urllib.error, urllib.request, uuid

URL = {url!r}
SECRET = {secret!r}.encode()
PROVIDER = {provider!r}
ZERO = "0" * 40

for line in sys.stdin:
    before, after, ref = line.split()
    payload = {{"ref": ref, "before": before, "after": after,
               "repository": {{"name": "origin", "clone_url": "file://local"}}}}
    delivery = str(uuid.uuid4())
    if PROVIDER == "github":
        payload["deleted"] = after == ZERO
        headers = {{"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}}
    elif PROVIDER == "gitlab":
        payload["object_kind"] = "push"
        headers = {{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": delivery,
                   "X-Gitlab-Token": SECRET.decode()}}
    else:
        name = PROVIDER.capitalize()
        headers = {{f"X-{{name}}-Event": "push", f"X-{{name}}-Delivery": delivery}}
    body = json.dumps(payload).encode()
    signature = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if PROVIDER == "github":
        headers["X-Hub-Signature-256"] = "sha256=" + signature
    elif PROVIDER != "gitlab":
        headers[f"X-{{PROVIDER.capitalize()}}-Signature"] = signature
    headers["Content-Type"] = "application/json"
    request = urllib.request.Request(URL, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    with open({log!r}, "a") as log:
        log.write(json.dumps({{"ref": ref, "status": status, "answer": answer.decode(),
                              "body": body.decode(), "headers": headers}}) + "\n")
    print(f"plat answered {{status}} for {{ref}}")
"""


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@dataclass
class Repo:
    root: Path

    @property
    def bare(self) -> Path:
        return self.root / "origin.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def log(self) -> Path:
        return self.bare / "deliveries.jsonl"

    @classmethod
    def create(cls, root: Path, files: dict[str, str]) -> Repo:
        """A bare repository with a first commit of ``files`` on main (no hook yet)."""
        repo = cls(root)
        root.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", "--initial-branch=main", str(repo.bare), cwd=root)
        git("init", "--quiet", "--initial-branch=main", str(repo.work), cwd=root)
        git("remote", "add", "origin", str(repo.bare), cwd=repo.work)
        repo.commit(files, "first")
        git("push", "--quiet", "origin", "main", cwd=repo.work)
        return repo

    def hook_up(self, provider: str, url: str, secret: str) -> None:
        """Install the post-receive script that POSTs to ``url`` as ``provider``."""
        script = self.bare / "hooks" / "post-receive"
        script.write_text(
            POST_RECEIVE.format(
                python=sys.executable,
                url=url,
                secret=secret,
                provider=provider,
                log=str(self.log),
            )
        )
        script.chmod(0o755)

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def push(self, *args: str) -> str:
        return git("push", "origin", *args, cwd=self.work)

    def answers(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
