"""Waiting for a rollout: a Deployment available at its new generation, or a Knative
Service Ready. ``progress`` is told each state it passes through; running out
of time raises a PlatError that says where it stopped and how to look closer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from plat.errors import PlatError
from plat.k8s.mapping import KNATIVE_API


class RolloutTimeout(PlatError):
    status = 504
    code = "rollout_timeout"


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def deployment_state(obj: dict[str, Any]) -> tuple[bool, str]:
    """(done, what to show) of a Deployment (pure): done when the controller has seen
    the latest spec, every replica is updated and available, and Available is True."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas") or 0)
    generation = (obj.get("metadata") or {}).get("generation") or 0
    observed = status.get("observedGeneration") or 0
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    cond = _condition(obj, "Available")
    done = (
        observed >= generation
        and updated >= want
        and available >= want
        and (cond or {}).get("status") == "True"
    )
    if observed < generation:
        return False, "waiting for the deployment controller to see the new spec"
    return done, f"{available}/{want} available, {updated} updated"


def knative_state(obj: dict[str, Any]) -> tuple[bool, str]:
    """(done, what to show) of a Knative Service (pure): done when Ready is True at
    the latest generation."""
    generation = (obj.get("metadata") or {}).get("generation") or 0
    observed = (obj.get("status") or {}).get("observedGeneration") or 0
    cond = _condition(obj, "Ready")
    if observed < generation or cond is None:
        return False, "waiting for Knative to see the new spec"
    if cond.get("status") == "True":
        return True, "Ready"
    reason = cond.get("reason") or cond.get("status")
    message = cond.get("message") or ""
    return False, f"not ready: {reason}" + (f" ({message})" if message else "")


def wait_rollout(
    read: Callable[[], dict[str, Any] | None],
    api_version: str,
    *,
    timeout: float,
    progress: Callable[[str], None],
    where: str,
    look: str = "",
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll ``read`` until the object is rolled out; returns it. ``where`` names it
    for messages ("Deployment hello in namespace default"), ``look`` says how to
    look closer (kubectl commands)."""
    state = knative_state if api_version == KNATIVE_API else deployment_state
    deadline = clock() + timeout
    last = ""
    while True:
        obj = read()
        if obj is None:
            raise PlatError(f"{where} disappeared while plat waited for it")
        done, shown = state(obj)
        if shown != last:
            progress(shown)
            last = shown
        if done:
            return obj
        if clock() >= deadline:
            raise RolloutTimeout(
                f"{where} did not become ready within {timeout:g} s: {shown}",
                hint="its pods may be pending, failing their probes or unable to pull the "
                f"image{': ' + look if look else ''}; the objects are applied: --no-wait "
                "does not wait for them",
            )
        sleep(interval)
