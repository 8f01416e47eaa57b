"""The runtime registry: ``runtimes/<name>/runtime.yaml`` describes each runtime.

runtime.yaml keys:
  name, description
  base:          public base image (e.g. python:3.12-slim); absent for `dockerfile`
  bootstrap:     {image: local tag, packages: [Debian packages]} for `plat runtime bootstrap`
  detect:        file names or globs whose presence selects the runtime
  handler:       default handler reference written into plat.yaml
  dependencies:  dependency files copied before the code layer (e.g. [requirements.txt])
  containerfile: jinja2 template of the Containerfile (relative to the runtime folder)
  shim:          folder of files copied into the image at /opt/plat/shim
  scaffold:      {target path: template path} rendered by `plat init`
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from plat.errors import PlatError

if TYPE_CHECKING:
    import jinja2


def runtimes_root() -> Path:
    """The folder holding the runtimes: packaged copy first, then the checkout's."""
    packaged = Path(__file__).parent / "_runtimes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "runtimes"


@dataclass(frozen=True)
class Bootstrap:
    image: str
    packages: tuple[str, ...]


@dataclass(frozen=True)
class Runtime:
    name: str
    path: Path
    description: str = ""
    base: str | None = None
    bootstrap: Bootstrap | None = None
    detect: tuple[str, ...] = ()
    handler: str | None = None
    dependencies: tuple[str, ...] = ()
    containerfile: str | None = None
    shim: str | None = None
    scaffold: dict[str, str] = field(default_factory=dict)

    @property
    def shim_dir(self) -> Path | None:
        return self.path / self.shim if self.shim else None

    @property
    def poolable(self) -> bool:
        """Whether plat's shim runs its functions: then an instance can start ahead,
        unprivileged, and be specialised as a function later (the pre-warmed pool).
        A user's own image (the Dockerfile runtime) runs as it was built."""
        return self.shim is not None

    def environment(self) -> jinja2.Environment:
        import jinja2  # only the daemon renders: the CLI starts ~30 ms sooner without it

        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.path)),
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
            autoescape=False,
        )

    def render(self, template: str, **context: Any) -> str:
        return self.environment().get_template(template).render(runtime=self, **context)

    def matches(self, folder: Path) -> bool:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        return any(fnmatch.filter(names, pattern) for pattern in self.detect)


def _load(path: Path) -> Runtime:
    data: dict[str, Any] = yaml.safe_load((path / "runtime.yaml").read_text()) or {}
    boot = data.get("bootstrap")
    return Runtime(
        name=data.get("name", path.name),
        path=path,
        description=data.get("description", ""),
        base=data.get("base"),
        bootstrap=Bootstrap(boot["image"], tuple(boot.get("packages", []))) if boot else None,
        detect=tuple(data.get("detect", [])),
        handler=data.get("handler"),
        dependencies=tuple(data.get("dependencies", [])),
        containerfile=data.get("containerfile"),
        shim=data.get("shim"),
        scaffold=dict(data.get("scaffold", {})),
    )


@cache
def all_runtimes() -> dict[str, Runtime]:
    root = runtimes_root()
    found = {}
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if (path / "runtime.yaml").is_file():
            runtime = _load(path)
            found[runtime.name] = runtime
    return found


# Detection order: an explicit Dockerfile wins, then node (package.json), then python.
DETECT_ORDER = ("dockerfile", "node", "python")


def get_runtime(name: str) -> Runtime:
    runtimes = all_runtimes()
    if name not in runtimes:
        known = ", ".join(sorted(runtimes)) or "none"
        raise PlatError(
            f"unknown runtime {name!r}", hint=f"use one of: {known} (see `plat runtimes`)"
        )
    return runtimes[name]


def detect_runtime(folder: Path) -> str | None:
    """The runtime a folder's files imply, or None."""
    runtimes = all_runtimes()
    for name in DETECT_ORDER:
        if name in runtimes and runtimes[name].matches(folder):
            return name
    return None
