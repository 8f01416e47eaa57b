"""The chaos tests' daemon: one per module, with the module's ``FUNCTIONS`` deployed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.support import Chaos, deployed


@pytest.fixture(scope="module")
def chaos(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chaos]:
    """A fresh daemon with the module's ``FUNCTIONS`` (name: manifest lines) deployed;
    stopped after the module, failing it if containers are left behind."""
    module = request.module
    yield from deployed(tmp_path_factory, module.__name__.rpartition(".")[2], module.FUNCTIONS)
