"""Pushing a version's image to an OCI registry with ``buildah push``.

Buildah shares the image storage the builds went to (Podman's), pushes by the
image's own digest (``--digestfile``) and finds credentials where the
containers tools look: ``--authfile``, ``$REGISTRY_AUTH_FILE``,
``$XDG_RUNTIME_DIR/containers/auth.json``, then ``~/.docker/config.json``.
A failure becomes one PlatError saying which of the usual causes it is
(unreachable, TLS, credentials) with its fix, and the tail of buildah's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from plat.errors import PlatError
from plat.k8s.registry import DIGEST_RE
from plat.subprocesses import stream_lines

# One retry: a registry that refuses connections fails in seconds, not minutes.
RETRIES = 1
TAIL_LINES = 12


@dataclass(frozen=True)
class PushJob:
    image: str  # the local tag (localhost/plat/NAME:VERSION)
    destination: str  # REGISTRY/.../NAME:VERSION
    tls_verify: bool = True
    authfile: str | None = None


class PushFailed(PlatError):
    status = 502
    code = "push_failed"


def push_command(job: PushJob, digestfile: str) -> list[str]:
    cmd = ["buildah", "push", "--digestfile", digestfile, f"--retry={RETRIES}"]
    cmd += ["--retry-delay=1s", f"--tls-verify={'true' if job.tls_verify else 'false'}"]
    if job.authfile:
        cmd += ["--authfile", job.authfile]
    return [*cmd, job.image, f"docker://{job.destination}"]


def classify(output: str, job: PushJob) -> PushFailed:
    """The error for a failed push, from buildah's output (pure, tested by cases)."""
    host = job.destination.split("/", 1)[0]
    text = output.lower()
    lines = output.strip().splitlines()
    tail = "\n".join(lines[-TAIL_LINES:])
    # buildah's own last word: "Error: pushing image ...: <cause>".
    cause = next((ln for ln in reversed(lines) if ln.startswith("Error:")), tail)
    if "server gave http response to https client" in text:
        return PushFailed(
            f"registry {host} speaks plain HTTP, not HTTPS",
            hint="push with --no-tls-verify for a registry without TLS (a local one)",
        )
    if "x509:" in text or "certificate" in text or "tls: " in text:
        return PushFailed(
            f"TLS with registry {host} failed: its certificate is not trusted\n{cause}",
            hint="trust its CA (/etc/containers/certs.d/HOST/ca.crt) or push with --no-tls-verify",
        )
    if any(
        s in text
        for s in ("unauthorized", "authentication required", "denied", "401", "403 forbidden")
    ):
        return PushFailed(
            f"registry {host} refused the push: not logged in, or not allowed\n{cause}",
            hint=f"`podman login {host}` (or set REGISTRY_AUTH_FILE, or pass --authfile "
            "to an auth.json / ~/.docker/config.json with credentials for it)",
        )
    if any(
        s in text
        for s in (
            "connection refused",
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "no route to host",
            "connection reset",
        )
    ):
        return PushFailed(
            f"registry {host} cannot be reached\n{cause}",
            hint="check the host and port (is the registry running?)",
        )
    return PushFailed(f"buildah push to {job.destination} failed\n{tail}")


async def push(job: PushJob, on_line: Callable[[str], None]) -> str:
    """Push ``job.image`` to ``job.destination``; returns the manifest digest the
    registry stores (sha256:...). Streams buildah's lines to ``on_line``.
    Raises PushFailed. Cancelled, buildah is killed with its process group."""
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        del lines[:-200]
        on_line(line)

    fd, digestfile = tempfile.mkstemp(prefix="plat-push-", suffix=".digest")
    os.close(fd)
    try:
        code = await stream_lines(push_command(job, digestfile), keep)
        if code != 0:
            raise classify("\n".join(lines), job)
        digest = (await asyncio.to_thread(_read, digestfile)).strip()
    finally:
        await asyncio.to_thread(_remove, digestfile)
    if not DIGEST_RE.fullmatch(digest):
        raise PushFailed(f"buildah pushed {job.destination} but wrote no digest ({digest[:80]!r})")
    return digest


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read(200)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
