"""From a function's manifest to Kubernetes objects (pure: no I/O, no client).

One ``Release`` (the manifest, the pushed image, where it goes) maps to either a
Deployment + Service + HorizontalPodAutoscaler (autoscaling/v2), or one Knative
Service; a tenant's function also gets its Namespace. The pods are hardened as
plat's local containers are (plat/daemon/drivers/container/documents.py): a
non-root uid, a read-only root filesystem with an emptyDir at /tmp, every
capability dropped, no privilege escalation, seccomp RuntimeDefault. Secrets are
a Kubernetes Secret (values never rendered) mounted where local instances find
them. docs/kubernetes.md explains each field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from plat.manifest import Manifest
from plat.runtimes import get_runtime
from plat.tenancy import DEFAULT_TENANT, function_key

LABEL_FUNCTION = "plat.function"
LABEL_VERSION = "plat.version"
LABEL_TENANT = "plat.tenant"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
MANAGER = "plat"
# What the shim listens on (runtimes/*/Containerfile.j2: ENV PORT=8080, EXPOSE 8080).
CONTAINER_PORT = 8080
SERVICE_PORT = 80
# Local containers run template runtimes as 10001:10001 (serving/instances.py).
RUN_AS = 10001
# The shim answers this header itself, without calling the handler (serving/probe.py).
PROBE_HEADER = "X-Plat-Probe"
SECRETS_PATHS = ("/var/plat/secrets", "/var/openfaas/secrets")
SECRETS_ENV = "PLAT_SECRETS_DIR"
TMP_SIZE = "64Mi"  # as the local containers' tmpfs
# HPA target: the average CPU use, as a share of what each pod requests.
CPU_TARGET_PERCENT = 70
ANNOTATION_TIMEOUT = "plat.dev/timeout-seconds"
ANNOTATION_AUTH = "plat.dev/auth"
KNATIVE_API = "serving.knative.dev/v1"
HPA_API = "autoscaling/v2"
LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DIGEST_RE = re.compile(r"@sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Release:
    """What to render: ``manifest`` (its name plain, as in plat.yaml) running
    ``image`` (a pushed reference, ideally by digest) in ``namespace``."""

    manifest: Manifest
    image: str
    namespace: str
    version: str
    tenant: str = DEFAULT_TENANT


def object_name(name: str) -> str:
    """The objects' name: the function's, which must also be a DNS-1035 label for a
    Service (a letter first); ``fn-`` goes before a name that starts with a digit."""
    if name[:1].isalpha():
        return name
    return ("fn-" + name)[:63].rstrip("-")


def secret_name(name: str) -> str:
    """The Kubernetes Secret holding the function's secrets (one key per secret)."""
    return (object_name(name)[:55].rstrip("-")) + "-secrets"


def version_of_image(image: str) -> str:
    """A ``plat.version`` label value for an image given by hand: its tag when that
    is a valid label value, else the first 12 digits of its digest, else "image"."""
    ref = DIGEST_RE.sub("", image)
    last = ref.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if tag and len(tag) <= 63 and LABEL_VALUE_RE.fullmatch(tag):
        return tag
    match = DIGEST_RE.search(image)
    return match.group(1)[:12] if match else "image"


def labels(release: Release) -> dict[str, str]:
    """The labels on every object (and pod): whose function, which version, whose tenant."""
    return {
        LABEL_NAME: object_name(release.manifest.name),
        LABEL_MANAGED: MANAGER,
        LABEL_FUNCTION: release.manifest.name,
        LABEL_VERSION: release.version,
        LABEL_TENANT: release.tenant,
    }


def selector(release: Release) -> dict[str, str]:
    """What a Deployment's (immutable) selector and the Service match: the function,
    never its version, so a new version rolls out under the same Deployment."""
    return {LABEL_FUNCTION: release.manifest.name, LABEL_TENANT: release.tenant}


def quantity_memory(size: int) -> str:
    mib = 1024**2
    return f"{size // mib}Mi" if size % mib == 0 else str(size)


def quantity_cpu(cpu: float) -> str:
    return f"{max(1, round(cpu * 1000))}m"


def _metadata(release: Release, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": release.namespace, "labels": labels(release), **extra}


def _env(release: Release, *, with_port: bool) -> list[dict[str, str]]:
    m = release.manifest
    env: dict[str, str] = {}
    if with_port:  # Knative sets PORT itself and refuses it in a spec
        env["PORT"] = str(CONTAINER_PORT)
    env["PLAT_FUNCTION"] = function_key(m.name, release.tenant)
    env["PLAT_VERSION"] = release.version
    # In-flight calls may finish within the function's timeout when the pod stops.
    env["PLAT_SHUTDOWN_GRACE"] = str(math.ceil(m.timeout))
    if m.secrets:
        env[SECRETS_ENV] = SECRETS_PATHS[0]
    if get_runtime(m.runtime).poolable:  # as serving/instances.py gives template shims
        if m.adapter is not None:
            env["PLAT_ADAPTER"] = m.adapter
        # No gateway in a cluster: an app's routes are at /, not /function/<name>
        # (Flask's url_for, ASGI root_path, Express's baseUrl). "/", not "": the API
        # server drops an empty value, and every apply would then change the object.
        env["PLAT_PREFIX"] = "/"
        env["PLAT_TIMEOUT"] = f"{m.timeout:g}"
        env["PLAT_MEMORY_MB"] = str(m.resources.memory // 1024**2)
    env.update(m.env)
    return [{"name": key, "value": value} for key, value in env.items()]


def _probes(release: Release, *, port: Any) -> dict[str, Any]:
    """Readiness and liveness on the shim's own probe answer; a Dockerfile function's
    server may answer / with anything, so it is probed by a TCP connection."""
    m = release.manifest
    action: dict[str, Any]
    if m.runtime == "dockerfile":
        action = {"tcpSocket": {"port": port}} if port is not None else {"tcpSocket": {}}
    else:
        get: dict[str, Any] = {"path": "/", "httpHeaders": [{"name": PROBE_HEADER, "value": "1"}]}
        if port is not None:
            get["port"] = port
        action = {"httpGet": get}
    timeout = math.ceil(m.timeout)
    return {
        # A busy shim (every worker in a handler) answers 503: it leaves the endpoints
        # until a worker is free.
        "readinessProbe": {**action, "periodSeconds": 2, "timeoutSeconds": 1},
        # ... and is restarted only when busy for longer than a call may take.
        "livenessProbe": {
            **action,
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": max(3, math.ceil(timeout / 10) + 1),
        },
    }


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(
    release: Release, *, knative: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): an emptyDir at /tmp; the Secret at each secrets path, its
    files readable by the pods' group (fsGroup), or by all where Knative refuses an
    fsGroup (one container, one user: the pod's own)."""
    m = release.manifest
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if m.secrets:
        items = [{"key": ref.name, "path": ref.name} for ref in m.secrets]
        mode = 0o444 if knative else 0o440
        secret = {"secretName": secret_name(m.name), "items": items, "defaultMode": mode}
        volumes.append({"name": "secrets", "secret": secret})
        mounts += [{"name": "secrets", "mountPath": p, "readOnly": True} for p in SECRETS_PATHS]
    return volumes, mounts


def _container(release: Release, *, knative: bool) -> dict[str, Any]:
    m = release.manifest
    resources = {
        "requests": {
            "cpu": quantity_cpu(m.resources.cpu),
            "memory": quantity_memory(m.resources.memory),
        },
        "limits": {
            "cpu": quantity_cpu(m.resources.cpu),
            "memory": quantity_memory(m.resources.memory),
        },
    }
    _, mounts = _volumes(release, knative=knative)
    port = {"containerPort": CONTAINER_PORT, "name": "http1" if knative else "http"}
    return {
        "name": "function",
        "image": release.image,
        "ports": [{**port, "protocol": "TCP"}],
        "env": _env(release, with_port=not knative),
        "resources": resources,
        **_probes(release, port=None if knative else "http"),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _pod_spec(release: Release, *, knative: bool) -> dict[str, Any]:
    """The pod: Knative's webhook admits only seccompProfile in a pod's securityContext
    (and no automountServiceAccountToken) unless its operator enables more, so there
    the container's securityContext alone carries the user and the rest."""
    volumes, _ = _volumes(release, knative=knative)
    spec: dict[str, Any] = {"enableServiceLinks": False}
    if knative:
        spec["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    else:
        spec["automountServiceAccountToken"] = False
        spec["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,  # the secret files (mode 0440) are the group's
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        spec["terminationGracePeriodSeconds"] = math.ceil(release.manifest.timeout) + 5
    spec["containers"] = [_container(release, knative=knative)]
    spec["volumes"] = volumes
    return spec


def _annotations(release: Release) -> dict[str, str]:
    m = release.manifest
    return {ANNOTATION_TIMEOUT: str(math.ceil(m.timeout)), ANNOTATION_AUTH: m.auth}


def namespace(release: Release) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": release.namespace,
            "labels": {LABEL_TENANT: release.tenant, LABEL_MANAGED: MANAGER},
        },
    }


def deployment(release: Release) -> dict[str, Any]:
    name = object_name(release.manifest.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(release, name, annotations=_annotations(release)),
        "spec": {
            "replicas": max(release.manifest.scale.min, 1),
            "selector": {"matchLabels": selector(release)},
            # As plat rolls out locally: the new pod is ready before an old one goes.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels(release), "annotations": _annotations(release)},
                "spec": _pod_spec(release, knative=False),
            },
        },
    }


def service(release: Release) -> dict[str, Any]:
    name = object_name(release.manifest.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(release, name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(release),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def autoscaler(release: Release, api_version: str = HPA_API) -> dict[str, Any]:
    """An HPA on CPU use: the resource metric every cluster with metrics-server has
    (a concurrency metric would need a custom metrics adapter; see the docs).
    ``api_version``: autoscaling/v2, or v2beta2 (the same spec) for older servers."""
    m = release.manifest
    name = object_name(m.name)
    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(release, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(m.scale.min, 1),
            "maxReplicas": m.scale.max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                }
            ],
        },
    }


def knative_service(release: Release) -> dict[str, Any]:
    m = release.manifest
    name = object_name(m.name)
    template_annotations = {
        **_annotations(release),
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/min-scale": str(m.scale.min),
        "autoscaling.knative.dev/max-scale": str(m.scale.max),
        "autoscaling.knative.dev/target": str(m.scale.concurrency),
    }
    return {
        "apiVersion": KNATIVE_API,
        "kind": "Service",
        "metadata": _metadata(release, name, annotations=_annotations(release)),
        "spec": {
            "template": {
                "metadata": {"labels": labels(release), "annotations": template_annotations},
                "spec": {
                    "containerConcurrency": m.scale.concurrency,
                    "timeoutSeconds": math.ceil(m.timeout),
                    **_pod_spec(release, knative=True),
                },
            }
        },
    }


def documents(release: Release, *, knative: bool = False) -> list[dict[str, Any]]:
    """Every object of ``release``, in the order they are applied."""
    out: list[dict[str, Any]] = []
    if release.tenant != DEFAULT_TENANT and release.namespace == release.tenant:
        out.append(namespace(release))
    if knative:
        out.append(knative_service(release))
    else:
        out += [deployment(release), service(release), autoscaler(release)]
    return out
