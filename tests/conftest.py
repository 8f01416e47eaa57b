"""Shared fixtures. The running-daemon fixtures live in tests/fixtures.py."""

from __future__ import annotations

pytest_plugins = ["tests.fixtures"]
