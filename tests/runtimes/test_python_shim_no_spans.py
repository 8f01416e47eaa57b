"""The Python shim without OpenTelemetry's SDK: nothing of it is imported, no
span is written, and a partial or broken install never stops the function."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.runtimes.shims import PYTHON, running
from tests.runtimes.spans import PREFIX, SITE_PACKAGES, SPANS_HANDLER, new_traceparent

pytestmark = pytest.mark.timeout(60)

NO_OTEL_HANDLER = textwrap.dedent(
    """
    import sys


    def handle(event, context):
        print(f"plain {context.trace_id}")
        return sorted(sys.modules)
    """
)


def test_without_opentelemetry_nothing_of_it_is_imported(tmp_path: Path) -> None:
    with running(PYTHON, PYTHON.write(tmp_path / "app", NO_OTEL_HANDLER)) as server:
        plain = server.request("GET", "/").json()
        trace_id, _, traceparent = new_traceparent()
        traced = server.request("GET", "/", headers={"traceparent": traceparent, "X-Call-Id": "n"})
        # Parsing the traceparent imports nothing either.
        assert traced.json() == plain
        assert not [name for name in plain if name.startswith("opentelemetry")]
        assert "platshim.handlerspans" not in plain
        assert f"[call:n trace:{trace_id}] plain {trace_id}" in server.wait_lines("plain", 2)
        assert PREFIX not in server.stdout
        assert server.stderr == ""


def _api_only(root: Path) -> Path:
    """A dependency folder with OpenTelemetry's API but not its SDK."""
    package = root / "opentelemetry"
    package.mkdir(parents=True)
    for entry in (SITE_PACKAGES / "opentelemetry").iterdir():
        if entry.name not in {"sdk", "exporter", "proto"}:
            (package / entry.name).symlink_to(entry)
    for pattern in ("opentelemetry_api-*.dist-info", "typing_extensions.py"):
        for entry in SITE_PACKAGES.glob(pattern):
            (root / entry.name).symlink_to(entry)
    return root


def test_the_api_alone_writes_no_spans(tmp_path: Path) -> None:
    deps = _api_only(tmp_path / "deps")
    folder = PYTHON.write(tmp_path / "app", SPANS_HANDLER)
    with running(PYTHON, folder, PYTHONPATH=str(deps)) as server:
        trace_id, _, traceparent = new_traceparent()
        resp = server.request("GET", "/span?m=api", headers={"traceparent": traceparent})
        assert resp.json() == {"trace_id": trace_id}
        assert server.request("GET", "/provider").text == "ProxyTracerProvider"
        assert PREFIX not in server.stdout
        assert server.stderr == ""


def test_a_broken_opentelemetry_does_not_stop_the_function(tmp_path: Path) -> None:
    files = {"opentelemetry/__init__.py": "raise RuntimeError('broken install')\n"}
    folder = PYTHON.write(tmp_path / "app", NO_OTEL_HANDLER)
    for name, text in files.items():
        os.makedirs(folder / os.path.dirname(name), exist_ok=True)
        (folder / name).write_text(text)
    with running(PYTHON, folder) as server:
        headers = {"traceparent": new_traceparent()[2]}
        assert server.request("GET", "/", headers=headers).status == 200
        assert "handler spans are off: RuntimeError: broken install" in server.stderr
