"""Waiting for a rollout: the states of a Deployment and of a Knative Service, and
the timeout (pure: objects as the API server returns them, a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest

from plat.errors import PlatError
from plat.k8s.wait import RolloutTimeout, deployment_state, knative_state, wait_rollout


def deployment(generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": observed, **status},
    }


AVAILABLE = {"conditions": [{"type": "Available", "status": "True"}]}


@pytest.mark.parametrize(
    ("obj", "done", "shown"),
    [
        (
            deployment(observed=1),
            False,
            "waiting for the deployment controller to see the new spec",
        ),
        (deployment(), False, "0/2 available, 0 updated"),
        (
            deployment(updatedReplicas=2, availableReplicas=1, **AVAILABLE),
            False,
            "1/2 available, 2 updated",
        ),
        (
            deployment(updatedReplicas=1, availableReplicas=2, **AVAILABLE),
            False,
            "2/2 available, 1 updated",
        ),
        (deployment(updatedReplicas=2, availableReplicas=2), False, "2/2 available, 2 updated"),
        (
            deployment(updatedReplicas=2, availableReplicas=2, **AVAILABLE),
            True,
            "2/2 available, 2 updated",
        ),
        ({"metadata": {}, "spec": {}}, False, "0/0 available, 0 updated"),
    ],
)
def test_deployment_states(obj: dict[str, Any], done: bool, shown: str) -> None:
    assert deployment_state(obj) == (done, shown)


def ksvc(status: str | None, observed: int = 1, **extra: str) -> dict[str, Any]:
    conditions = [] if status is None else [{"type": "Ready", "status": status, **extra}]
    return {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": observed, "conditions": conditions},
    }


@pytest.mark.parametrize(
    ("obj", "done", "shown"),
    [
        (ksvc(None), False, "waiting for Knative to see the new spec"),
        (ksvc("True", observed=0), False, "waiting for Knative to see the new spec"),
        (ksvc("Unknown", reason="Deploying"), False, "not ready: Deploying"),
        (
            ksvc("False", reason="RevisionFailed", message="image pull failed"),
            False,
            "not ready: RevisionFailed (image pull failed)",
        ),
        (ksvc("True"), True, "Ready"),
    ],
)
def test_knative_states(obj: dict[str, Any], done: bool, shown: str) -> None:
    assert knative_state(obj) == (done, shown)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_reports_each_state_once_and_returns_when_done() -> None:
    states = iter(
        [
            deployment(observed=1),
            deployment(),
            deployment(),
            deployment(updatedReplicas=2, availableReplicas=2, **AVAILABLE),
        ]
    )
    shown: list[str] = []
    clock = Clock()
    obj = wait_rollout(
        lambda: next(states),
        "apps/v1",
        timeout=60,
        progress=shown.append,
        where="d",
        clock=clock,
        sleep=clock.sleep,
    )
    assert obj["status"]["availableReplicas"] == 2
    assert shown == [
        "waiting for the deployment controller to see the new spec",
        "0/2 available, 0 updated",
        "2/2 available, 2 updated",
    ]


def test_the_wait_times_out_saying_where_it_stopped() -> None:
    clock = Clock()
    with pytest.raises(RolloutTimeout) as info:
        wait_rollout(
            lambda: deployment(),
            "apps/v1",
            timeout=5,
            progress=lambda s: None,
            where="Deployment x",
            look="`kubectl describe`",
            clock=clock,
            sleep=clock.sleep,
        )
    assert (
        info.value.message
        == "Deployment x did not become ready within 5 s: 0/2 available, 0 updated"
    )
    assert "`kubectl describe`" in str(info.value.hint)
    assert clock.now == pytest.approx(5, abs=1)


def test_an_object_deleted_while_waiting_is_an_error() -> None:
    with pytest.raises(PlatError, match="disappeared"):
        wait_rollout(
            lambda: None, "serving.knative.dev/v1", timeout=5, progress=lambda s: None, where="x"
        )
