"""Builds through the container engine's own build API (Docker or Podman)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import docker
import docker.errors

from plat.daemon.drivers.container.builders import BuildJob, LineSink
from plat.engine import SDK_POOLS
from plat.errors import BuildError


class EngineBuilder:
    name = "engine"

    def __init__(self, endpoint: str) -> None:
        self._client = docker.APIClient(base_url=endpoint, timeout=600, num_pools=SDK_POOLS)

    async def image_exists(self, tag: str) -> bool:
        def check() -> bool:
            try:
                self._client.inspect_image(tag)
                return True
            except docker.errors.ImageNotFound:
                return False

        return await asyncio.to_thread(check)

    async def remove_image(self, tag: str) -> None:
        def remove() -> None:
            with contextlib.suppress(docker.errors.APIError):
                self._client.remove_image(tag)

        await asyncio.to_thread(remove)

    async def build(self, job: BuildJob, on_line: LineSink) -> None:
        loop = asyncio.get_running_loop()
        lines: list[str] = []
        cancelled = threading.Event()

        def emit(line: str) -> None:
            lines.append(line)
            loop.call_soon_threadsafe(on_line, line)

        def run() -> str | None:
            dockerfile = (
                str(job.containerfile.relative_to(job.context))
                if job.containerfile.is_relative_to(job.context)
                else str(job.containerfile)
            )
            stream: Any = self._client.build(
                path=str(job.context),
                dockerfile=dockerfile,
                tag=job.tag,
                labels=job.labels,
                buildargs=job.build_args,
                rm=True,
                decode=True,
                pull=False,
            )
            for chunk in stream:
                if cancelled.is_set():
                    return "cancelled"
                if "stream" in chunk:
                    for line in str(chunk["stream"]).splitlines():
                        emit(line)
                if "error" in chunk:
                    emit(str(chunk["error"]))
                    return str(chunk["error"]).strip()
            return None

        try:
            error = await asyncio.to_thread(run)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        except docker.errors.APIError as exc:
            raise BuildError(f"build of {job.tag} failed: {exc.explanation or exc}") from exc
        if error:
            step = next((ln for ln in reversed(lines) if ln.upper().startswith("STEP ")), None)
            raise BuildError(
                f"build of {job.tag} failed{' at ' + step if step else ''}: {error}",
                log_tail="\n".join(lines[-25:]),
            )
