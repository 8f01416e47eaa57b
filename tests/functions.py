"""Small functions written into temporary folders by the integration tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_python_function(
    root: Path,
    name: str,
    handler: str,
    *,
    extra_manifest: str = "",
    requirements: str = "",
) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plat.yaml").write_text(
        f"name: {name}\nruntime: python\nhandler: handler.handle\n"
        + textwrap.dedent(extra_manifest)
    )
    (folder / "handler.py").write_text(textwrap.dedent(handler))
    (folder / "requirements.txt").write_text(requirements)
    return folder


ECHO = """
import json, os

def handle(event, context):
    return {
        "method": event.method,
        "path": event.path,
        "query": dict(event.query),
        "body": event.body.decode(),
        "x_test": event.headers.get("x-test"),
        "authorization": event.headers.get("authorization"),
        "greeting": os.environ.get("GREETING"),
    }
"""

SLOW = """
import time

def handle(event, context):
    time.sleep(5)
    return "late"
"""

# /hang never returns (a thread stuck for good); anything else answers at once.
HANG = """
import threading

STUCK = threading.Event()

def handle(event, context):
    if event.path == "/hang":
        STUCK.wait()
    return "alive"
"""

CRASH = """
import os

def handle(event, context):
    if event.path == "/die":
        os._exit(3)
    if event.path == "/raise":
        raise RuntimeError("boom from the handler")
    return "alive"
"""
