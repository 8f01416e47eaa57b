"""Fixtures of the serving unit tests: a real store, the in-memory backend, controllers."""

from tests.daemon.fakes import backend_fixture, store_fixture
from tests.daemon.serving.controllers import controller, controllers

__all__ = ["backend_fixture", "controller", "controllers", "store_fixture"]
