"""Which action a control request is, and what of it may be recorded."""

from __future__ import annotations

import pytest

from plat.daemon.audit.actions import action_of, params_of, route_of, target_of


@pytest.mark.parametrize(
    ("method", "pattern", "name"),
    [
        ("POST", "/v1/functions", "function.deploy"),
        ("POST", "/api/v1/functions", "function.deploy"),
        ("DELETE", "/v1/functions/{name}", "function.rm"),
        ("PATCH", "/api/v1/functions/{name}/scale", "function.scale"),
        ("PUT", "/v1/secrets/{name}", "secret.set"),
        ("DELETE", "/v1/secrets/{name}", "secret.rm"),
        ("POST", "/v1/tenants", "tenant.create"),
        ("DELETE", "/v1/tenants/{tenant}", "tenant.rm"),
        ("POST", "/v1/tenants/{tenant}/token", "tenant.token.rotate"),
        ("POST", "/v1/calls/{call_id}/retry", "call.retry"),
        ("POST", "/v1/shutdown", "daemon.shutdown"),
        ("POST", "/v1/new/{thing}", "POST /v1/new/{thing}"),
    ],
)
def test_routes_name_their_actions(method: str, pattern: str, name: str) -> None:
    assert action_of(method, pattern).name == name


def test_a_route_from_its_version_on() -> None:
    assert route_of("/api/v1/audit") == "/v1/audit"
    assert route_of("/elsewhere") == "/elsewhere"


def test_a_secret_records_its_name_and_nothing_of_its_body() -> None:
    action = action_of("PUT", "/v1/secrets/{name}")
    body = {"value": "hunter2"}
    assert target_of(action, {"name": "db"}, body) == "db"
    assert params_of(action, {"value": "x"}, body) == {}


def test_only_listed_parameters_are_kept() -> None:
    scale = action_of("PATCH", "/v1/functions/{name}/scale")
    body = {"min": 1, "max": 4, "token": "secret", "reset": False}
    assert params_of(scale, {"force": "1"}, body) == {"min": 1, "max": 4, "reset": False}
    create = action_of("POST", "/v1/tenants")
    assert target_of(create, {}, {"name": "acme", "max_memory": "4Gi"}) == "acme"
    assert target_of(create, {}, None) is None
    assert params_of(create, {}, {"name": "acme", "max_memory": "4Gi"}) == {"max_memory": "4Gi"}
    rm = action_of("DELETE", "/v1/tenants/{tenant}")
    assert (rm.of_tenant, params_of(rm, {"force": "1", "x": "y"}, None)) == (True, {"force": "1"})
    hook = action_of("POST", "/v1/hooks")
    body = {"function": "hello", "repo": "https://u:tok@git.example/x.git", "branch": "main"}
    assert (target_of(hook, {}, body), params_of(hook, {}, body)) == ("hello", {"branch": "main"})
    unknown = action_of("POST", "/v1/new/{thing}")
    assert target_of(unknown, {"thing": "t1"}, None) == "t1"
