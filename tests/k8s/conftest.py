"""The API server is shared by the module that asks for it: it takes ~10 s to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.servers import ApiServer, kube_apiserver


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        yield server
