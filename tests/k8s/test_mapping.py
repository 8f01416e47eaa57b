"""The mapping from plat.yaml to Kubernetes objects, field by field (pure, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from plat.k8s.mapping import (
    Release,
    documents,
    object_name,
    quantity_cpu,
    quantity_memory,
    secret_name,
    version_of_image,
)
from plat.k8s.render import render
from plat.manifest import validate_manifest

IMAGE = "r.example.com/hello:abc@sha256:" + "e" * 64


def release(tenant: str = "default", namespace: str = "default", **fields: Any) -> Release:
    data = {"name": "hello", "runtime": "python", **fields}
    return Release(validate_manifest(data), IMAGE, namespace, "abc", tenant=tenant)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return dict(c)


@pytest.mark.parametrize(("minimum", "replicas"), [(0, 1), (1, 1), (3, 3)])
def test_replicas_are_the_minimum_but_at_least_one(minimum: int, replicas: int) -> None:
    docs = by_kind(documents(release(scale={"min": minimum, "max": 5})))
    assert docs["Deployment"]["spec"]["replicas"] == replicas
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (replicas, 5)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hello",
    }


def test_every_object_and_pod_carries_the_labels() -> None:
    want = {"plat.function": "hello", "plat.version": "abc", "plat.tenant": "default"}
    for knative in (False, True):
        for doc in documents(release(), knative=knative):
            assert want.items() <= doc["metadata"]["labels"].items(), doc["kind"]
            if "template" in doc.get("spec", {}):
                assert want.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def test_the_selector_names_the_function_not_its_version() -> None:
    docs = by_kind(documents(release()))
    selector = {"plat.function": "hello", "plat.tenant": "default"}
    assert docs["Deployment"]["spec"]["selector"] == {"matchLabels": selector}
    assert docs["Service"]["spec"]["selector"] == selector


def test_the_pod_is_hardened_as_local_containers_are() -> None:
    dep = by_kind(documents(release()))["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    c = container(dep)
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in pod["volumes"]


def test_resources_timeout_and_env() -> None:
    dep = by_kind(
        documents(
            release(
                resources={"memory": "512Mi", "cpu": 0.25},
                timeout="75s",
                env={"GREETING": "hi", "PORT": "9999"},
            )
        )
    )["Deployment"]
    c = container(dep)
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "250m", "memory": "512Mi"},
    }
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["GREETING"] == "hi"
    assert env["PLAT_FUNCTION"] == "hello" and env["PLAT_VERSION"] == "abc"
    assert env["PLAT_TIMEOUT"] == "75" and env["PLAT_MEMORY_MB"] == "512"
    assert env["PLAT_SHUTDOWN_GRACE"] == "75"
    assert env["PORT"] == "9999"  # the user's own env wins, as locally
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 80
    assert dep["metadata"]["annotations"]["plat.dev/timeout-seconds"] == "75"


@pytest.mark.parametrize("adapter", [None, "wsgi", "asgi"])
def test_an_app_is_mounted_at_the_root_in_a_cluster(adapter: str | None) -> None:
    """Without plat's gateway nothing strips /function/<name>: the shim's adapters
    must not put it in front of the app's links."""
    fields = {} if adapter is None else {"adapter": adapter}
    c = container(by_kind(documents(release(**fields)))["Deployment"])
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PLAT_PREFIX"] == "/"  # the shim strips the slash: mounted at the root
    assert env.get("PLAT_ADAPTER") == adapter


def test_probes_use_the_shims_probe_and_tcp_for_a_dockerfile() -> None:
    c = container(by_kind(documents(release()))["Deployment"])
    get = c["readinessProbe"]["httpGet"]
    assert get == {
        "path": "/",
        "httpHeaders": [{"name": "X-Plat-Probe", "value": "1"}],
        "port": "http",
    }
    assert c["livenessProbe"]["httpGet"] == get
    c = container(by_kind(documents(release(runtime="dockerfile")))["Deployment"])
    assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert "httpGet" not in c["livenessProbe"]
    env = {e["name"] for e in c["env"]}
    assert "PLAT_TIMEOUT" not in env  # only template shims read these


@pytest.mark.parametrize(("timeout", "threshold"), [("10s", 3), ("30s", 4), ("300s", 31)])
def test_liveness_outlasts_the_longest_call(timeout: str, threshold: int) -> None:
    c = container(by_kind(documents(release(timeout=timeout)))["Deployment"])
    live = c["livenessProbe"]
    assert live["failureThreshold"] == threshold
    assert live["periodSeconds"] * live["failureThreshold"] >= float(timeout[:-1])


def test_secrets_are_a_reference_mounted_at_both_paths_never_values() -> None:
    rel = release(secrets=["db-password", {"name": "api-key", "vault": "kv/app#key"}])
    dep = by_kind(documents(rel))["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert vol["secret"] == {
        "secretName": "hello-secrets",
        "items": [
            {"key": "db-password", "path": "db-password"},
            {"key": "api-key", "path": "api-key"},
        ],
        "defaultMode": 0o440,
    }
    mounts = [m for m in container(dep)["volumeMounts"] if m["name"] == "secrets"]
    assert [m["mountPath"] for m in mounts] == ["/var/plat/secrets", "/var/openfaas/secrets"]
    assert all(m["readOnly"] for m in mounts)
    text = render(rel, documents(rel))
    assert "kind: Secret\n" not in text
    assert "kubectl -n default create secret generic hello-secrets" in text
    assert "--from-file=db-password=./db-password" in text


def test_a_tenant_gets_its_namespace_labelled() -> None:
    docs = documents(release(tenant="acme", namespace="acme"))
    assert docs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "acme",
            "labels": {"plat.tenant": "acme", "app.kubernetes.io/managed-by": "plat"},
        },
    }
    assert all(d["metadata"].get("namespace") == "acme" for d in docs[1:])
    env = {e["name"]: e["value"] for e in container(by_kind(docs)["Deployment"])["env"]}
    assert env["PLAT_FUNCTION"] == "hello.acme"
    # A tenant's function sent to a namespace named by hand: no Namespace object.
    assert "Namespace" not in by_kind(documents(release(tenant="acme", namespace="team")))


def test_knative_service_fields() -> None:
    rel = release(scale={"min": 0, "max": 7, "concurrency": 12}, timeout="2m")
    (ksvc,) = documents(rel, knative=True)
    assert ksvc["apiVersion"] == "serving.knative.dev/v1"
    template = ksvc["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "plat.dev/timeout-seconds": "120",
        "plat.dev/auth": "basic",
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/min-scale": "0",
        "autoscaling.knative.dev/max-scale": "7",
        "autoscaling.knative.dev/target": "12",
    }
    spec = template["spec"]
    assert spec["containerConcurrency"] == 12 and spec["timeoutSeconds"] == 120
    # What Knative's webhook refuses by default: PORT in env, a probe port, pod-level
    # user fields, automountServiceAccountToken, terminationGracePeriodSeconds.
    c = spec["containers"][0]
    assert "PORT" not in {e["name"] for e in c["env"]}
    assert "port" not in c["readinessProbe"]["httpGet"]
    assert c["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert "automountServiceAccountToken" not in spec
    assert "terminationGracePeriodSeconds" not in spec
    assert c["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_knative_secret_files_are_readable_without_an_fs_group() -> None:
    (ksvc,) = documents(release(secrets=["token"]), knative=True)
    (vol,) = [v for v in ksvc["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"]
    assert vol["secret"]["defaultMode"] == 0o444


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hello", "hello"), ("9lives", "fn-9lives"), ("1" + "a" * 62, "fn-1" + "a" * 59)],
)
def test_object_names_are_dns_1035_labels(name: str, expected: str) -> None:
    assert object_name(name) == expected
    assert len(object_name(name)) <= 63
    assert len(secret_name(name)) <= 63 and secret_name(name).endswith("-secrets")


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("r/x:v1.2@sha256:" + "a" * 64, "v1.2"),
        ("r:5000/x@sha256:" + "b" * 64, "bbbbbbbbbbbb"),
        ("r:5000/x", "image"),
        ("r/x:-bad-", "image"),
    ],
)
def test_version_of_an_image_given_by_hand(image: str, version: str) -> None:
    assert version_of_image(image) == version


@pytest.mark.parametrize(
    ("size", "text"), [(256 * 1024**2, "256Mi"), (10**9, "1000000000"), (1024**3, "1024Mi")]
)
def test_memory_quantities(size: int, text: str) -> None:
    assert quantity_memory(size) == text


@pytest.mark.parametrize(("cpu", "text"), [(0.5, "500m"), (2.0, "2000m"), (0.0001, "1m")])
def test_cpu_quantities(cpu: float, text: str) -> None:
    assert quantity_cpu(cpu) == text


def test_hostile_values_stay_values_in_the_yaml() -> None:
    """Env values that look like YAML (a document marker, a comment, an anchor, a
    newline) come back as the same strings: nothing the user writes becomes structure."""
    env = {"A": "---\nkind: Secret", "B": "# not a comment", "C": "*alias", "D": "x" * 100_000}
    rel = release(env=env)
    docs = documents(rel)
    parsed = [d for d in yaml.safe_load_all(render(rel, docs)) if d is not None]
    assert parsed == docs
    values = {e["name"]: e["value"] for e in container(by_kind(parsed)["Deployment"])["env"]}
    assert {k: values[k] for k in env} == env
