"""Where the process backend's artifacts live, and how an instance spec names one.

See :mod:`plat.daemon.drivers.process.artifacts` for the layout of the work folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from plat.daemon.drivers.versions import PROCESS_IMAGE_PREFIX
from plat.errors import PlatError

POOL_DIR = "_pool"
DEPS_ROOT = "_deps"
TMP_PREFIX = ".tmp-"
EMPTY_DEPS = "empty"
# Beside app/ and deps: which runtime's shim serves the folder (read by the backend).
ARTIFACT_META = "artifact.json"


def image_ref(artifact: Path) -> str:
    """The ``InstanceSpec.image`` of an artifact folder."""
    return f"{PROCESS_IMAGE_PREFIX}{artifact}"


def artifact_dir(image: str) -> Path:
    """The artifact folder named by an ``InstanceSpec.image`` of the process backend.

    Raises PlatError when ``image`` is not a ``process:<dir>`` reference (e.g. an
    image built for the container backend).
    """
    if not image.startswith(PROCESS_IMAGE_PREFIX) or len(image) == len(PROCESS_IMAGE_PREFIX):
        raise PlatError(
            f"{image!r} is not a process artifact (expected 'process:<folder>')",
            hint="redeploy the function so it is prepared for the process backend",
        )
    return Path(image[len(PROCESS_IMAGE_PREFIX) :])


def artifact_runtime(artifact: Path) -> str:
    """The runtime an artifact folder was prepared for; PlatError if it is not one."""
    try:
        meta = json.loads((artifact / ARTIFACT_META).read_text())
        runtime = meta["runtime"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PlatError(
            f"{artifact} is not a prepared function folder (it may have been pruned)",
            hint="deploy the function again",
        ) from None
    return str(runtime)


def rename_into_place(tmp: Path, target: Path) -> None:
    """Rename a folder assembled under a temporary name to ``target``; when another
    preparation got there first, its folder (of the same content) stays."""
    try:
        tmp.rename(target)
    except OSError:
        if not target.is_dir():
            raise
