"""Which control action a request is, and which of its parameters may be recorded.

A table from (method, route) to the action's name, the route part naming its
target, and the query and JSON body keys that are safe to keep. Only what is
listed is ever read: a secret's route lists no body key, so its value is never
looked at, and no answer (where tokens are) is read at all. A changing route
missing from the table is still recorded, as ``METHOD /route``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Action:
    name: str
    target: str | None = None  # the route's part (or, for body_target, body key) naming it
    query: tuple[str, ...] = ()  # query parameters safe to record
    body: tuple[str, ...] = ()  # JSON body keys safe to record
    body_target: bool = False  # the target is a body key (the route has none)
    of_tenant: bool = False  # the target is a tenant: its records are that tenant's


ACTIONS: dict[tuple[str, str], Action] = {
    ("POST", "/v1/functions"): Action("function.deploy", query=("force", "dev")),
    ("DELETE", "/v1/functions/{name}"): Action("function.rm", "name"),
    ("PATCH", "/v1/functions/{name}/scale"): Action(
        "function.scale", "name", body=("min", "max", "concurrency", "reset")
    ),
    ("PUT", "/v1/secrets/{name}"): Action("secret.set", "name"),
    ("DELETE", "/v1/secrets/{name}"): Action("secret.rm", "name"),
    ("POST", "/v1/tenants"): Action(
        "tenant.create",
        "name",
        body=("max_instances", "max_memory"),
        body_target=True,
        of_tenant=True,
    ),
    ("DELETE", "/v1/tenants/{tenant}"): Action(
        "tenant.rm", "tenant", query=("force",), of_tenant=True
    ),
    ("POST", "/v1/tenants/{tenant}/token"): Action("tenant.token.rotate", "tenant", of_tenant=True),
    ("POST", "/v1/calls/{call_id}/retry"): Action("call.retry", "call_id"),
    ("POST", "/v1/shutdown"): Action("daemon.shutdown"),
    ("POST", "/v1/functions/{name}/push"): Action("function.push", "name"),
    # Not the repository's URL: it may hold credentials (https://user:token@host/...).
    ("POST", "/v1/hooks"): Action(
        "hook.add",
        "function",
        body=("branch", "path", "previews", "preview_ttl"),
        body_target=True,
    ),
    ("DELETE", "/v1/hooks/{hook}"): Action("hook.rm", "hook"),
}


def route_of(pattern: str) -> str:
    """A route's pattern from ``/v1/`` on (the gateway's door mounts them under /api)."""
    at = pattern.find("/v1/")
    return pattern[at:] if at >= 0 else pattern


def action_of(method: str, pattern: str) -> Action:
    """The action a changing request to the route ``pattern`` is."""
    route = route_of(pattern)
    found = ACTIONS.get((method, route))
    return found if found is not None else Action(f"{method} {route}")


def target_of(
    action: Action, match_info: Mapping[str, str], body: Mapping[str, Any] | None
) -> str | None:
    """What the action is on, as far as the request says."""
    if action.target is None:
        return next(iter(match_info.values()), None)
    source: Mapping[str, Any] | None = body if action.body_target else match_info
    value = source.get(action.target) if source is not None else None
    return None if value is None else str(value)


def params_of(
    action: Action, query: Mapping[str, str], body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The listed query and body parameters the request gave."""
    out: dict[str, Any] = {k: query[k] for k in action.query if k in query}
    if body is not None:
        out |= {k: body[k] for k in action.body if body.get(k) is not None}
    return out
