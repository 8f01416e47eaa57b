"""The pushed commit, fetched with real git and laid out in a fresh folder.

Each hook has a bare cache repository, ``<root>/<hook id>/cache.git``. A delivery
fetches just its commit into it (``git fetch --depth 1 <repo> <sha>``; servers
that refuse a commit by id get the branch's ref instead, and the delivery says
which commit that was), then ``git archive`` streams the commit's tree (or the
hook's sub folder of it) into :func:`plat.archive.extract`: the checkout is a
new folder, nothing is written outside it, and links that leave it are refused,
as for an uploaded deploy. Git runs with no terminal prompt, only the transports
named in GIT_ALLOW_PROTOCOL (no ``ext::``), and a deadline.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

from plat.archive import ArchiveError, extract
from plat.errors import PlatError
from plat.subprocesses import stream_lines

GIT_TIMEOUT = 600.0
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
STRANGER_PROTOCOLS = "git:http:https"
MAX_REPO = 2048
MAX_PATH = 1024
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://")
_SCP = re.compile(r"[^/:@]+@[^/:]+:")  # git@host:owner/repo
REMOTE_SCHEMES = frozenset({"http", "https", "git", "ssh"})

Line = Callable[[str], None]


class FetchError(PlatError):
    code = "fetch_failed"


def is_local(repo: str) -> bool:
    """Whether ``repo`` names something on the daemon's host (a path or file://)."""
    match = _SCHEME.match(repo)
    if match:
        return match.group(1).lower() == "file"
    return not _SCP.match(repo)


def check_repo(repo: str) -> str:
    """``repo`` when git may fetch it: an absolute path, file://, http(s)://, git://,
    ssh:// or user@host:path. Raises PlatError for anything else (``ext::`` and
    other transports that run commands, options in disguise, relative paths)."""
    repo = repo.strip()
    if not repo or len(repo) > MAX_REPO or any(ord(c) < 32 or ord(c) == 127 for c in repo):
        raise PlatError("--repo must be a git URL or a path of up to 2048 characters")
    if repo.startswith("-"):
        raise PlatError(f"--repo {repo[:80]!r} starts with '-'")
    match = _SCHEME.match(repo)
    if match:
        if match.group(1).lower() not in REMOTE_SCHEMES | {"file"}:
            raise PlatError(
                f"--repo {repo[:80]!r}: git fetches over {', '.join(sorted(REMOTE_SCHEMES))} "
                "or file:// here"
            )
        return repo
    if "::" in repo.split("/", 1)[0]:
        raise PlatError(f"--repo {repo[:80]!r}: remote helpers (<transport>::) are not allowed")
    if _SCP.match(repo):
        return repo
    if not os.path.isabs(repo):
        raise PlatError(
            f"--repo {repo[:80]!r} is a relative path", hint="give the repository's full path"
        )
    return os.path.normpath(repo)


def check_path(path: str) -> str:
    """The sub folder of the repository to deploy, normalised ('' for the top)."""
    if len(path) > MAX_PATH or "\0" in path or "\\" in path:
        raise PlatError("--path must be a folder of the repository, e.g. functions/hello")
    clean = posixpath.normpath(path.strip().strip("/")) if path.strip().strip("/") else ""
    if clean == ".":
        clean = ""
    if clean.startswith("..") or posixpath.isabs(clean):
        raise PlatError(f"--path {path[:80]!r} leaves the repository")
    return clean


class Fetcher:
    """Fetches commits into per-hook caches under ``root``; one fetch per hook at a time
    (git locks a shallow repository's ``shallow`` file for the length of a fetch)."""

    def __init__(self, root: Path, env: Mapping[str, str], timeout: float = GIT_TIMEOUT) -> None:
        self.root = root
        self.timeout = timeout
        self.env = {
            **env,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
        }
        # A tenant's hook fetches without the daemon user's git configuration, credential
        # helpers and ssh keys: it reaches what anyone may, never what the host may.
        self.stranger_env = {
            **self.env,
            "GIT_ALLOW_PROTOCOL": STRANGER_PROTOCOLS,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(root),
        }
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def cache(self, hook: str) -> Path:
        return self.root / hook / "cache.git"

    async def checkout(
        self,
        hook: str,
        repo: str,
        sha: str,
        ref: str | None,
        path: str,
        dest: Path,
        on_line: Line,
        *,
        trusted: bool = True,
    ) -> str:
        """Lay commit ``sha`` of ``repo`` (its ``path`` sub folder) out in ``dest``, a
        folder that must not exist; returns the commit laid out (the tip of ``ref``
        when the server would not give ``sha`` by id). ``trusted``: the fetch may use
        the daemon user's git configuration and keys (the admin's hooks). Raises
        FetchError."""
        env = self.env if trusted else self.stranger_env
        cache = self.cache(hook)
        async with self._locks[hook]:
            if not (cache / "HEAD").exists():
                cache.mkdir(parents=True, exist_ok=True, mode=0o700)
                await self._git(cache, ["init", "--quiet", "--bare"], on_line)
            fetch = ["fetch", "--depth", "1", "--no-tags", "--no-write-fetch-head"]
            got = sha
            if await self._git(cache, [*fetch, "--", repo, sha], on_line, env, check=False):
                if ref is None:
                    raise FetchError(f"git could not fetch commit {sha[:12]} from {repo}")
                on_line(f"fetching {ref} instead of the commit by its id")
                target = f"+{ref}:refs/plat/fetched"
                await self._git(cache, [*fetch, "--", repo, target], on_line, env)
                got = await self._rev(cache, "refs/plat/fetched^{commit}")
                if got != sha:
                    on_line(f"{ref} is at {got[:12]} now, not {sha[:12]}: laying that out")
        tree = f"{got}:{path}" if path else got
        await asyncio.to_thread(self._archive, cache, tree, dest)
        return got

    def forget(self, hook: str) -> None:
        """Remove the hook's cache (the hook is removed)."""
        shutil.rmtree(self.root / hook, ignore_errors=True)
        self._locks.pop(hook, None)

    def _archive(self, cache: Path, tree: str, dest: Path) -> None:
        cmd = ["git", "--git-dir", str(cache), "archive", "--format=tar.gz", tree]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            try:
                extract(proc.stdout, dest)  # type: ignore[arg-type]
            except ArchiveError as exc:
                if proc.wait() == 0:
                    raise FetchError(
                        f"the commit cannot be laid out safely: {exc.message}"
                    ) from None
            code = proc.wait()
            if code != 0:
                error = proc.stderr.read(4096).decode(errors="replace").strip()
                if path_missing(error):
                    error = f"{tree.partition(':')[2] or 'the top'} is not a folder of that commit"
                raise FetchError(f"git archive failed (exit {code}): {error}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()

    async def _git(
        self,
        cache: Path,
        args: list[str],
        on_line: Line,
        env: dict[str, str] | None = None,
        *,
        check: bool = True,
    ) -> int:
        cmd = ["git", "--git-dir", str(cache), *args]
        try:
            async with asyncio.timeout(self.timeout):
                code = await stream_lines(cmd, on_line, env=env or self.env)
        except TimeoutError:
            raise FetchError(f"git {args[0]} took longer than {self.timeout:g} s") from None
        except OSError as exc:
            raise FetchError(f"git cannot run: {exc.strerror or exc}", hint="install git") from None
        if check and code != 0:
            raise FetchError(f"git {args[0]} failed (exit {code}); see the delivery's log")
        return code

    async def _rev(self, cache: Path, name: str) -> str:
        lines: list[str] = []
        await self._git(cache, ["rev-parse", "--verify", "--quiet", name], lines.append)
        return lines[-1].strip() if lines else ""


def path_missing(error: str) -> bool:
    error = error.lower()
    return "not a tree object" in error or "not a valid object name" in error
