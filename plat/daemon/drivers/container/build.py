"""From a function folder to an image: context snapshot, Containerfile, digest, build.

The image tag carries a content digest of everything that goes into the image,
so deploying unchanged code finds the image and does not rebuild.

A runtime's Containerfile ends with the step that copies the code. Everything
above it (base, shim, settings, dependencies) is built once as a *stack* image,
``localhost/plat/stack-<runtime>:<digest>``, shared by every function with the
same handler and dependency files; a function's image is then that stack and its
code, one step. Layer-cache lookups cost ~0.1 s per step and grow with the number
of images in the store, so a function built on a stack that exists skips them all.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from plat import baseimages
from plat.daemon.drivers.container.anchors import LABEL_STACK
from plat.daemon.drivers.container.builders import Builder, BuildJob
from plat.daemon.drivers.container.devdeps import DepsInstaller, install_step
from plat.daemon.drivers.container.hot import DevMounts, make_readable
from plat.daemon.drivers.container.retention import ImageRetention
from plat.daemon.drivers.versions import BuildOutcome, LineSink
from plat.errors import BuildError
from plat.ignore import (
    Entry,
    IgnoreRules,
    content_entries,
    content_entry,
    copy_entries,
    copy_regular,
    digest_files,
    open_regular,
)
from plat.manifest import Manifest, validate_manifest
from plat.runtimes import Runtime, get_runtime

CA_TARGET = "/run/plat-ca/ca.crt"
GENERATED_CONTAINERFILE = ".plat.Containerfile"
STACK_CONTAINERFILE = ".plat.stack.Containerfile"
CODE_STEP = "COPY app/ /home/app/"
# What may follow the code step in a runtime's Containerfile (settings: no layer).
TAIL_STEPS = frozenset({"USER", "ENV", "LABEL", "EXPOSE", "CMD", "ENTRYPOINT", "WORKDIR"})
# Host settings a dependency install may need; passed as build arguments when set.
PASSED_BUILD_ARGS = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "NPM_CONFIG_REGISTRY",
)
CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


@dataclass(frozen=True)
class _Plan:
    runtime: Runtime
    entries: list[Entry]
    # Dependency files present: {name: the regular file standing for it}.
    dependencies: dict[str, Entry]
    containerfile: str
    version: str
    # The stack's Containerfile and tag (None: one build, for `dockerfile`).
    stack: str | None = None
    stack_tag: str = ""
    shim_digest: str = ""


def split_stack(text: str) -> tuple[str, str] | None:
    """A rendered runtime Containerfile as (the stack's Containerfile, the code step
    and the settings after it), or None when it has no code step or runs anything
    after it."""
    lines = text.rstrip().split("\n")
    at = max((i for i, line in enumerate(lines) if line.strip() == CODE_STEP), default=None)
    if at is None:
        return None
    rest = [line.strip() for line in lines[at:] if line.strip() and not line.startswith("#")]
    if any(line.split()[0].upper() not in TAIL_STEPS for line in rest[1:]):
        return None
    return "\n".join(lines[:at]) + "\n", "\n".join(rest)


def stack_tag(runtime: str, digest: str) -> str:
    return f"localhost/plat/stack-{runtime}:{digest[:12]}"


def host_ca_bundle(env: Mapping[str, str]) -> str | None:
    """The CA bundle the host trusts (passed to dependency installs only)."""
    for key in ("PLAT_CA_BUNDLE", "SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        value = env.get(key)
        if value and os.path.isfile(value):
            return value
    return next((path for path in CA_CANDIDATES if os.path.isfile(path)), None)


def image_tag(function: str, version: str) -> str:
    return f"localhost/plat/{function}:{version}"


# Takes a stack build's code (image, stack, the context's app folder) for the pool.
KeepCode = Callable[[str, str, Path], None]


class ImageBuilder:
    """Container images from function folders (the container backend's ``Artifacts``).

    ``hot`` serves `plat dev` (see ``hot.DevMounts``): a code-only change is
    snapshotted and mounted over the image's code; with an ``installer``, a
    dependency change is installed in a container of the function's last image and
    mounted over its dependencies too. Anything else builds for real.
    """

    def __init__(
        self,
        builder: Builder,
        work_dir: Path,
        env: Mapping[str, str],
        dev_dir: Path,
        keep_code: KeepCode | None = None,
        installer: DepsInstaller | None = None,
    ) -> None:
        self.builder = builder
        self.keep_code = keep_code
        self.work_dir = work_dir
        self.env = env
        self.dev_dir = dev_dir
        self.dev = DevMounts(builder, dev_dir, installer)
        self._pool_images: dict[str, str] = {}
        self._pool_lock = asyncio.Lock()
        self._stack_locks: dict[str, asyncio.Lock] = {}
        self._bases: dict[str, str] = {}
        self.retention = ImageRetention(builder, self.dev.removed)

    async def pool_image(self, runtime: str) -> str:
        """The image of the runtime's pool instances: its base and shim, no function.

        Built (or found by digest) once per daemon from the runtime's own
        Containerfile with an empty function folder.
        """
        async with self._pool_lock:
            image = self._pool_images.get(runtime)
            if image is None:
                empty = self.work_dir / f".pool-{runtime}"
                await asyncio.to_thread(empty.mkdir, parents=True, exist_ok=True)
                manifest = validate_manifest(
                    {"name": f"pool-{runtime}", "runtime": runtime}, source="pool"
                )
                outcome = await self.build(manifest, empty, lambda line: None)
                image = self._pool_images[runtime] = outcome.image
            return image

    @property
    def name(self) -> str:
        return self.builder.name

    async def deps_key(
        self, manifest: Manifest, source: Path, entries: list[Entry] | None = None
    ) -> str | None:
        """A digest of everything below the code layer, or None for `dockerfile`.

        ``entries`` are the folder's, when already scanned."""
        runtime = get_runtime(manifest.runtime)
        containerfile = runtime.containerfile
        if not containerfile:
            return None

        def compute() -> str:
            parts = [runtime.name.encode(), (runtime.path / containerfile).read_bytes()]
            shim = runtime.shim_dir
            if shim is not None:
                parts.append(digest_files(shim, sorted(_tree(shim))).encode())
            scanned = IgnoreRules(source).entries() if entries is None else entries
            deps = content_entries(scanned, runtime.dependencies)
            parts += [name.encode() for name in deps]
            return digest_files(source, list(deps.values()), b"\0".join(parts))

        return await asyncio.to_thread(compute)

    async def hot(
        self, manifest: Manifest, source: Path, on_line: LineSink | None = None
    ) -> BuildOutcome | None:
        entries = await asyncio.to_thread(IgnoreRules(source).entries)
        key = await self.deps_key(manifest, source, entries)
        if key is None:
            return None
        outcome = await self.dev.code_only(manifest, source, entries, key)
        if outcome is not None or self.dev.installer is None:
            return outcome
        plan = await self._plan(manifest, source, entries)
        step = install_step(plan.stack, plan.shim_digest) if plan.stack else None
        if step is None:
            return None
        volumes, build_args = self._build_settings(plan)
        return await self.dev.dependencies(
            manifest,
            source,
            entries,
            key,
            step,
            plan.dependencies,
            volumes,
            build_args,
            on_line or (lambda line: None),
        )

    async def forget(self, name: str) -> None:
        """Delete ``name``'s dev snapshots, build contexts and images (not the stacks it
        shares with other functions)."""
        await self.retention.remove_all(name)
        context = re.compile(rf"\.?{re.escape(name)}-[0-9a-f]{{12}}(\.tmp)?")

        def remove() -> None:
            self.dev.forget(name)
            if self.work_dir.is_dir():
                for entry in self.work_dir.iterdir():
                    if context.fullmatch(entry.name):
                        shutil.rmtree(entry, ignore_errors=True)

        await asyncio.to_thread(remove)

    async def _base(self, runtime: Runtime) -> str:
        """The runtime's base image: resolved once (two ``podman`` runs, ~0.25 s), then
        kept while it exists, so the versions built on it stay the same."""
        known = self._bases.get(runtime.name)
        if known is not None and await self.builder.image_exists(known):
            return known
        base = self._bases[runtime.name] = await baseimages.resolve_base(runtime)
        return base

    async def _plan(
        self, manifest: Manifest, source: Path, entries: list[Entry] | None = None
    ) -> _Plan:
        """What to build for ``source`` (``entries``: its files, when already scanned)."""
        runtime = get_runtime(manifest.runtime)
        if entries is None:
            entries = await asyncio.to_thread(IgnoreRules(source).entries)
        dependencies = content_entries(entries, runtime.dependencies)
        stack: str | None = None
        if runtime.containerfile:
            base = await self._base(runtime)
            present = list(dependencies)
            text = runtime.render(
                runtime.containerfile,
                base=base,
                function=manifest.name,
                handler=manifest.handler or runtime.handler or "",
                dependency_files=present,
                has_dependencies=bool(present),
            )
            shim = runtime.shim_dir
            shim_digest = (
                await asyncio.to_thread(digest_files, shim, sorted(_tree(shim))) if shim else ""
            )
            extra = f"{runtime.name}\0{text}\0{shim_digest}".encode()
            split = split_stack(text)
            if split is not None:
                stack, code = split
                names = "\0".join(dependencies).encode()
                stack_digest = await asyncio.to_thread(
                    digest_files,
                    source,
                    list(dependencies.values()),
                    f"{runtime.name}\0{stack}\0{shim_digest}\0".encode() + names,
                )
                tag = stack_tag(runtime.name, stack_digest)
                built = f"FROM {tag}\n{code}\n"
        else:
            dockerfile = content_entry(entries, "Dockerfile")
            if dockerfile is None:
                raise BuildError(
                    f"runtime 'dockerfile' needs a Dockerfile in {source}",
                    hint="add a Dockerfile whose server listens on $PORT, or set another runtime",
                )
            mapping = await baseimages.local_equivalents()
            text = baseimages.rewrite_from_lines(await _read_text(source, dockerfile), mapping)
            extra = f"dockerfile\0{text}".encode()
        digest = await asyncio.to_thread(digest_files, source, entries, extra)
        if stack is None:
            return _Plan(runtime, entries, dependencies, text, digest[:12])
        return _Plan(runtime, entries, dependencies, built, digest[:12], stack, tag, shim_digest)

    def _prepare(self, plan: _Plan, source: Path, target: Path) -> tuple[Path, Path]:
        """Lay out the build context; returns (context, containerfile)."""
        if target.exists():
            shutil.rmtree(target)
        if plan.runtime.containerfile:
            context = target
            app = context / "app"
            app.mkdir(parents=True)
            deps = context / "deps"
            deps.mkdir()
            for name, entry in plan.dependencies.items():
                copy_regular(source, entry.path, deps / name)
            if plan.runtime.shim_dir:
                shutil.copytree(plan.runtime.shim_dir, context / "shim")
        else:
            context = app = target
            app.mkdir(parents=True)
        copy_entries(source, plan.entries, app)
        make_readable(context)
        containerfile = context / GENERATED_CONTAINERFILE
        containerfile.unlink(missing_ok=True)  # the function's own file of that name, or link
        containerfile.write_text(plan.containerfile)
        if plan.stack is not None:
            stack = context / STACK_CONTAINERFILE
            stack.unlink(missing_ok=True)
            stack.write_text(plan.stack)
        return context, containerfile

    async def build(
        self, manifest: Manifest, source: Path, on_line: LineSink, *, force: bool = False
    ) -> BuildOutcome:
        """Build (or find) the image for ``source``; raises BuildError with a log tail."""
        started = time.monotonic()
        plan = await self._plan(manifest, source)
        tag = image_tag(manifest.name, plan.version)
        log: list[str] = []

        def sink(line: str) -> None:
            log.append(line)
            on_line(line)

        key = await self.deps_key(manifest, source, plan.entries)
        if not force and await self.builder.image_exists(tag):
            sink(f"image {tag} is up to date (no changes since it was built)")
            self.dev.built(manifest.name, key, tag, self._upper(plan))
            return BuildOutcome(
                plan.version,
                tag,
                True,
                time.monotonic() - started,
                self.builder.name,
                "\n".join(log),
            )
        target = self.work_dir / f"{manifest.name}-{plan.version}"
        context, containerfile = await asyncio.to_thread(self._prepare, plan, source, target)
        volumes, build_args = self._build_settings(plan)
        # A --label is one more step after the code; the code step of a stack is built
        # without layers, as one commit with its label (and so is the stack).
        labels = {"plat.function": manifest.name}
        if plan.stack is not None:
            labels[LABEL_STACK] = plan.stack_tag
        try:
            if plan.stack is not None:
                await self._build_stack(plan, context, volumes, build_args, sink, force=force)
                volumes, build_args = {}, {}
            # The code step of a stack is new whenever the version is: no cache lookup.
            layers = plan.stack is None
            job = BuildJob(context, containerfile, tag, labels, volumes, build_args, layers)
            await self.builder.build(job, sink)
            if plan.stack is not None and self.keep_code is not None:
                await asyncio.to_thread(self.keep_code, tag, plan.stack_tag, context / "app")
        finally:
            await asyncio.to_thread(shutil.rmtree, target, True)
        self.dev.built(manifest.name, key, tag, self._upper(plan))
        self.retention.built(manifest.name, tag)
        return BuildOutcome(
            plan.version, tag, False, time.monotonic() - started, self.builder.name, "\n".join(log)
        )

    def _build_settings(self, plan: _Plan) -> tuple[dict[str, str], dict[str, str]]:
        """The read-only mounts (the host's CA bundle) and build arguments of an install."""
        volumes = {}
        ca = host_ca_bundle(self.env)
        if ca and plan.runtime.containerfile:
            volumes[ca] = CA_TARGET
        return volumes, {k: self.env[k] for k in PASSED_BUILD_ARGS if self.env.get(k)}

    @staticmethod
    def _upper(plan: _Plan) -> str | None:
        step = install_step(plan.stack, plan.shim_digest) if plan.stack else None
        return step.upper if step else None

    async def _build_stack(
        self,
        plan: _Plan,
        context: Path,
        volumes: dict[str, str],
        build_args: dict[str, str],
        sink: LineSink,
        *,
        force: bool,
    ) -> None:
        """Build the plan's stack image unless it exists (once at a time per stack:
        functions deployed together share it)."""
        lock = self._stack_locks.setdefault(plan.stack_tag, asyncio.Lock())
        async with lock:
            if not force and await self.builder.image_exists(plan.stack_tag):
                sink(f"stack image {plan.stack_tag} is up to date")
                return
            # Without layers: one commit, and no cache lookup per step (each scans the
            # store's images). A stack is new whenever it is built; its shared part
            # (base, shim, settings) is a few KiB and one RUN with the install.
            job = BuildJob(
                context,
                context / STACK_CONTAINERFILE,
                plan.stack_tag,
                {},
                volumes,
                build_args,
                layers=False,
            )
            await self.builder.build(job, sink)


def _tree(root: Path) -> list[Path]:
    files = (p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [p.relative_to(root) for p in files]


async def _read_text(source: Path, entry: Entry) -> str:
    def read() -> str:
        with open_regular(source, entry.path) as fh:
            return fh.read().decode(errors="replace")

    return await asyncio.to_thread(read)
