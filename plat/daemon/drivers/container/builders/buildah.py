"""Builds with ``buildah build`` as an async subprocess, streaming its log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil

from plat.daemon.drivers.container.builders import BuildJob, Image, LineSink
from plat.daemon.drivers.container.builders.engine import engine_images
from plat.daemon.drivers.container.engine import Engine, EngineAPIError
from plat.errors import BuildError, EngineError
from plat.subprocesses import stream_lines

TRANSIENT = "layer not known"
STEP_RE = re.compile(r"^(STEP \d+(?:/\d+)?: .*)$")


def buildah_available() -> bool:
    return shutil.which("buildah") is not None


def build_command(job: BuildJob) -> list[str]:
    cmd = ["buildah", "build", "--layers" if job.layers else "--layers=false", "--pull=never"]
    cmd += ["-f", str(job.containerfile)]
    cmd += ["-t", job.tag]
    for key, value in sorted(job.labels.items()):
        cmd += ["--label", f"{key}={value}"]
    for key, value in sorted(job.build_args.items()):
        cmd += ["--build-arg", f"{key}={value}"]
    for host, target in sorted(job.volumes.items()):
        cmd += ["-v", f"{host}:{target}:ro"]
    cmd.append(str(job.context))
    return cmd


def failing_step(lines: list[str]) -> str | None:
    for line in reversed(lines):
        match = STEP_RE.match(line.strip())
        if match:
            return match.group(1)
    return None


def buildah_images(text: str) -> list[Image]:
    """Images from ``buildah images --json`` (pure; nothing from what is not JSON)."""
    try:
        entries = json.loads(text or "[]")
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [
        Image(tuple(e.get("names") or ()), float(e.get("created") or 0))
        for e in entries
        if isinstance(e, dict)
    ]


class BuildahBuilder:
    """Builds with the ``buildah`` CLI. With ``engine`` (the endpoint of a Podman that
    shares buildah's image storage), whether an image exists is asked over its API,
    a few ms, rather than by starting ``buildah inspect`` (~0.1 s per build)."""

    name = "buildah"

    def __init__(self, engine: str | None = None) -> None:
        self.engine = engine

    async def _run(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def image_exists(self, tag: str) -> bool:
        if self.engine is not None:
            with contextlib.suppress(EngineError):
                async with Engine(self.engine) as engine:
                    return await engine.image_exists(tag)
        code, _ = await self._run(
            "buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", tag
        )
        return code == 0

    async def remove_image(self, tag: str) -> None:
        if self.engine is not None:
            try:
                async with Engine(self.engine) as engine:
                    await engine.remove_image(tag)
                return
            except EngineAPIError:  # in use: stays
                return
            except EngineError:  # the engine is not answering: buildah's own way
                pass
        await self._run("buildah", "rmi", tag)  # fails, harmlessly, on an image in use

    async def labelled(self, label: str) -> list[Image]:
        if self.engine is not None:
            with contextlib.suppress(EngineError):
                async with Engine(self.engine) as engine:
                    return engine_images(await engine.images({"label": [label]}))
        code, out = await self._run("buildah", "images", "--json", "--filter", f"label={label}")
        return buildah_images(out) if code == 0 else []

    async def build(self, job: BuildJob, on_line: LineSink) -> None:
        try:
            await self._build(job, on_line)
        except BuildError as exc:
            # Another buildah/podman removing images at the same moment can make a
            # cached layer vanish mid-lookup; that is worth exactly one more try.
            if TRANSIENT not in exc.log_tail:
                raise
            on_line("(a cached layer vanished during the build; building again)")
            await self._build(job, on_line)

    async def _build(self, job: BuildJob, on_line: LineSink) -> None:
        cmd = build_command(job)
        on_line("$ " + " ".join(cmd))
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            on_line(line)

        code = await stream_lines(cmd, keep)
        if code != 0:
            step = failing_step(lines)
            where = f" at {step}" if step else ""
            raise BuildError(
                f"build of {job.tag} failed{where} (buildah exit {code})",
                log_tail="\n".join(lines[-25:]),
                hint="fix the step above and deploy again; `plat deploy -v` shows the full log",
            )
