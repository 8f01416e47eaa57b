"""``plat init``: a new function folder from a runtime's scaffold templates.

The templates are listed under ``scaffold`` in ``runtimes/<name>/runtime.yaml``
(``{target path: template path}``) and rendered with jinja2; the context is
``name``, ``runtime`` (the runtime's name) and ``handler`` (its default handler
reference, or None).
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from plat.errors import ConflictError, PlatError
from plat.manifest import NAME_RE
from plat.runtimes import Runtime, get_runtime


def check_name(name: str) -> None:
    """Raise PlatError unless ``name`` is a valid function name (a DNS label)."""
    if not NAME_RE.fullmatch(name):
        raise PlatError(
            f"{name!r} is not a valid function name",
            hint="use 1-63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit (e.g. hello-world)",
        )


def render_scaffold(runtime: Runtime, name: str) -> dict[Path, str]:
    """The files ``plat init`` would write, relative path -> content, in template order.

    Raises PlatError if a template is missing or broken (a bug in the runtime).
    """
    environment = runtime.environment()
    context = {"name": name, "runtime": runtime.name, "handler": runtime.handler}
    files: dict[Path, str] = {}
    for target, template in runtime.scaffold.items():
        relative = Path(target)
        if relative.is_absolute() or ".." in relative.parts:
            raise PlatError(
                f"runtime {runtime.name!r}: scaffold target {target!r} is outside the folder"
            )
        try:
            files[relative] = environment.get_template(template).render(**context)
        except jinja2.TemplateError as exc:
            raise PlatError(
                f"runtime {runtime.name!r}: cannot render scaffold template {template!r}: {exc}",
                hint=f"check {runtime.path / 'runtime.yaml'} and {runtime.path / template}",
            ) from None
    return files


def scaffold(target: Path, name: str, runtime: str) -> list[Path]:
    """Create a function folder at ``target``; returns the files written, in order.

    Raises PlatError when the name is invalid, the runtime unknown, or ``target``
    exists and is not an empty folder. Everything is rendered before the first
    file is written, so a failure leaves nothing half-made behind.
    """
    check_name(name)
    selected = get_runtime(runtime)
    if target.exists() and not target.is_dir():
        raise ConflictError(
            f"{target} exists and is not a folder",
            hint="choose another name, or another place with --dir",
        )
    if target.is_dir() and any(target.iterdir()):
        raise ConflictError(
            f"{target} already exists and is not empty",
            hint="choose another name, pass --dir to create it elsewhere, "
            "or remove the folder first",
        )
    files = render_scaffold(selected, name)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for relative, content in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
