"""Builds through the container engine's own build API (Docker or Podman)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from plat.daemon.drivers.container.builders import BuildJob, Image, LineSink
from plat.daemon.drivers.container.engine import Engine, EngineAPIError
from plat.errors import BuildError

# The longest a build may go without a line of output (seconds).
QUIET_TIMEOUT = 600.0
# The name a Containerfile from outside the context has in the context sent.
OUTSIDE_CONTAINERFILE = ".plat.outside.Containerfile"
# What a dependency install says when TLS is intercepted by a CA only the host trusts.
TLS_FAILURES = ("CERTIFICATE_VERIFY_FAILED", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER")
NO_MOUNTS_HINT = (
    "the engine's build API cannot lend the host's CA bundle to the install step "
    "(buildah can): point PIP_INDEX_URL or NPM_CONFIG_REGISTRY at a mirror reachable "
    "without it, or use Podman (docs/host-setup.md, 'The engine endpoint')"
)


def build_params(job: BuildJob) -> dict[str, str]:
    """The query of ``POST /build`` for ``job`` (pure)."""
    dockerfile = (
        str(job.containerfile.relative_to(job.context))
        if job.containerfile.is_relative_to(job.context)
        else OUTSIDE_CONTAINERFILE
    )
    # forcerm: a failed step's container is removed too (Docker keeps it otherwise).
    params = {"t": job.tag, "dockerfile": dockerfile, "rm": "1", "forcerm": "1", "pull": "0"}
    if job.labels:
        params["labels"] = json.dumps(job.labels)
    if job.build_args:
        params["buildargs"] = json.dumps(job.build_args)
    return params


def engine_images(entries: list[dict[str, Any]]) -> list[Image]:
    """Images from an engine's ``GET /images/json`` entries (pure)."""
    return [
        Image(
            tuple(t for t in entry.get("RepoTags") or () if t != "<none>:<none>"),
            float(entry.get("Created") or 0),
        )
        for entry in entries
    ]


class EngineBuilder:
    """The daemon does not close builders: each call has a connection of its own,
    closed when it ends."""

    name = "engine"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def image_exists(self, tag: str) -> bool:
        async with Engine(self.endpoint) as engine:
            return await engine.image_exists(tag)

    async def remove_image(self, tag: str) -> None:
        async with Engine(self.endpoint) as engine:
            with contextlib.suppress(EngineAPIError):  # in use, or gone already
                await engine.remove_image(tag)

    async def labelled(self, label: str) -> list[Image]:
        async with Engine(self.endpoint) as engine:
            return engine_images(await engine.images({"label": [label]}))

    async def build(self, job: BuildJob, on_line: LineSink) -> None:
        lines: list[str] = []

        def emit(line: str) -> None:
            lines.append(line)
            on_line(line)

        error = None
        if job.volumes:
            # Docker's classic builder has no build-time mounts (buildah's `-v`).
            emit(f"(the engine's build API does not mount {', '.join(sorted(job.volumes))})")
        extra = {}
        if not job.containerfile.is_relative_to(job.context):
            extra[OUTSIDE_CONTAINERFILE] = job.containerfile
        try:
            async with Engine(self.endpoint, timeout=QUIET_TIMEOUT) as engine:
                async for chunk in engine.build(job.context, build_params(job), extra):
                    if "stream" in chunk:
                        for line in str(chunk["stream"]).splitlines():
                            emit(line)
                    if "error" in chunk:
                        emit(str(chunk["error"]))
                        error = str(chunk["error"]).strip()
                        break
        except EngineAPIError as exc:
            raise BuildError(f"build of {job.tag} failed: {exc.explanation}") from exc
        if error:
            step = next((ln for ln in reversed(lines) if ln.upper().startswith("STEP ")), None)
            tls = bool(job.volumes) and any(w in ln for ln in lines for w in TLS_FAILURES)
            raise BuildError(
                f"build of {job.tag} failed{' at ' + step if step else ''}: {error}",
                log_tail="\n".join(lines[-25:]),
                hint=NO_MOUNTS_HINT if tls else None,
            )
