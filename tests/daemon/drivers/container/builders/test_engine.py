"""The fallback builder: the engine's own build API (Podman's Docker-compatible one here)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.fixtures import PlatRunner
from tests.functions import write_python_function

pytestmark = pytest.mark.container


def test_engine_build_api_builds_and_serves(fresh_plat: PlatRunner, tmp_path: Path) -> None:
    plat = fresh_plat
    plat.env["PLAT_BUILDER"] = "engine"
    name = f"viaengine-{uuid.uuid4().hex[:8]}"  # no image from an earlier run to reuse
    fn = write_python_function(tmp_path, name, "def handle(e, c):\n    return 'engine-built'\n")
    proc = plat.run("deploy", str(fn), "-v")
    assert "STEP" in proc.stderr or "Step" in proc.stderr
    assert plat.run("invoke", name).stdout == "engine-built"
    assert json.loads(plat.run("daemon", "status", "--json").stdout)["builder"] == "engine"
    # A failing step is reported the same way as with buildah.
    (fn / "requirements.txt").write_text("this-package-does-not-exist-plat==0.0.1\n")
    failed = plat.run("deploy", str(fn), check=False)
    assert failed.returncode == 1
    assert "build log" in failed.stderr
    assert "Traceback" not in failed.stderr
