"""A dependency change under `plat dev`, installed without building an image.

A stack's Containerfile ends with its install step: ``COPY deps/ /opt/plat/deps/``,
the ``ARG``s the install reads, and one ``RUN``. Under `plat dev` that step runs in
a container of an image the function already has (one whose stack differs only in
its dependencies), with a host folder mounted at ``/opt/plat/deps``; the instance
then runs that image with the folder, and the code's snapshot, mounted read-only
over its own. What is installed is what a build would install, by the same
command in the same base; what is skipped is Buildah's steps and commits, and
the code's second build (~2 s of a ~4 s dependency change). `plat deploy` builds
the image as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from plat.daemon.drivers.container.engine import Engine
from plat.daemon.drivers.versions import DEPS_DIR, LineSink
from plat.errors import BuildError, EngineError

DEPS_STEP = f"COPY deps/ {DEPS_DIR}/"
# Passed on to the install when set on the host, as buildah passes them to a RUN.
PROXY_VARIABLES = tuple(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY")
    for name in (base, base.lower())
)
LABEL_INSTALL = "plat.dev-install"
INSTALL_LINE = "install: "  # the first line of an install's output (`plat dev` shows it)
TAIL_LINES = 25


@dataclass(frozen=True)
class InstallStep:
    """A stack's install step: ``upper`` names everything above it (two stacks with
    the same ``upper`` differ only in their dependencies); ``script`` is the
    ``RUN``'s shell command, empty when the stack has no dependency files, and
    ``args`` the build arguments it declares."""

    upper: str
    script: str
    args: tuple[str, ...] = ()


def install_step(stack: str, salt: str = "") -> InstallStep | None:
    """The install step of a rendered stack Containerfile, or None when its tail is
    not one (then a dependency change is built as usual). ``salt`` (the shim's
    digest) goes into ``upper``."""
    lines = stack.rstrip().split("\n")
    at = next((i for i, line in enumerate(lines) if line.strip() == DEPS_STEP), None)
    if at is None:  # no dependency files: the last RUN prepares the image, no install
        runs = [i for i, line in enumerate(lines) if _instruction(line) == "RUN"]
        if not runs:
            return None
        return InstallStep(_digest(lines[: runs[-1]], salt), "")
    args: list[str] = []
    scripts: list[str] = []
    for text in _instructions(lines[at + 1 :]):
        word, _, rest = text.partition(" ")
        if word.upper() == "ARG":
            args.append(rest.strip().partition("=")[0])
        elif word.upper() == "RUN" and not rest.lstrip().startswith(("[", "--")):
            scripts.append(rest.strip())
        else:
            return None
    if len(scripts) != 1:
        return None
    return InstallStep(_digest(lines[:at], salt), scripts[0], tuple(args))


def _instruction(line: str) -> str:
    stripped = line.strip()
    return "" if stripped.startswith("#") else stripped.partition(" ")[0].upper()


def _instructions(lines: list[str]) -> list[str]:
    """Instructions with their continuation lines joined; comments and blanks out."""
    out: list[str] = []
    current = ""
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append(current + stripped)
        current = ""
    if current:
        out.append(current.strip())
    return out


def _digest(lines: list[str], salt: str) -> str:
    kept = (line.strip() for line in lines)
    text = "\n".join(line for line in kept if line and not line.startswith("#"))
    return hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()


class DepsInstaller:
    """Runs install steps in containers of the engine at ``endpoint``."""

    def __init__(self, endpoint: str, env: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        self.env = env

    async def install(
        self,
        image: str,
        step: InstallStep,
        folder: str,
        volumes: Mapping[str, str],
        build_args: Mapping[str, str],
        on_line: LineSink,
    ) -> None:
        """Run ``step`` in a container of ``image`` with ``folder`` (holding the
        dependency files) at DEPS_DIR and ``volumes`` read-only; the packages end
        up in ``folder``. Raises BuildError with the output's tail on failure."""
        env = {k: v for k, v in build_args.items() if k in step.args}
        env.update({k: self.env[k] for k in PROXY_VARIABLES if self.env.get(k)})
        binds = [f"{folder}:{DEPS_DIR}:rw"]
        binds += [f"{host}:{target}:ro" for host, target in sorted(volumes.items())]
        body = {
            "Image": image,
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [step.script],
            # As a build's RUN: root in the image (the instance's own user cannot
            # write), but with no capabilities and no way to gain privileges.
            "User": "0:0",
            "Env": [f"{k}={v}" for k, v in sorted(env.items())],
            "Labels": {LABEL_INSTALL: "1"},
            "HostConfig": {
                "Binds": binds,
                # User-mode networking: no bridge, so none of netavark's rules,
                # which it rewrites while plat's networks come and go (a bridged
                # install saw its name lookups fail for ~50 s during such churn).
                "NetworkMode": "slirp4netns",
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
            },
        }
        on_line(_shown(image, step))
        tail: list[str] = []

        def keep(text: str) -> None:
            tail.append(text)
            del tail[:-TAIL_LINES]
            on_line(text)

        async with Engine(self.endpoint) as engine:
            ref = ""
            try:
                ref = await engine.create(body)
                await engine.start(ref)
                async for line in engine.follow(ref):
                    keep(line.text)
                state = (await engine.inspect(ref) or {}).get("State") or {}
                pause = 0.02
                # The log ends a moment before the process (or at once, when the
                # engine refuses to stream it): wait for the exit, less often.
                while state.get("Running"):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    state = (await engine.inspect(ref) or {}).get("State") or {}
            except EngineError as exc:
                raise BuildError(
                    f"installing the dependencies in a container of {image}: {exc}",
                    log_tail="\n".join(tail),
                    hint="check `plat doctor`; `plat deploy` builds the image instead",
                ) from exc
            finally:
                if ref:  # also when superseded (cancelled): the install stops
                    with contextlib.suppress(EngineError):
                        await engine.remove(ref)
        code = int(state.get("ExitCode", -1))
        if code != 0:
            raise BuildError(
                f"installing the dependencies failed (exit {code})",
                log_tail="\n".join(tail),
                hint="fix the dependency files and save again; the running version keeps serving",
            )


def _shown(image: str, step: InstallStep) -> str:
    args = f" (build arguments it reads: {', '.join(step.args)})" if step.args else ""
    return f"{INSTALL_LINE}the stack's install step, in a container of {image}{args}"
