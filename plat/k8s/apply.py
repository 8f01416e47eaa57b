"""Talking to a cluster: server-side apply, reads, and removal by label.

Through the official ``kubernetes`` client's dynamic client, so Knative's
Service (a custom resource) goes the same way as a Deployment. Objects are
applied with server-side apply as field manager ``plat`` without forcing:
fields another manager owns come back as a conflict, said plainly, never
overwritten. Blocking (the client is synchronous): callers in an event loop run
it in a thread. Every failure is a PlatError naming the object and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from plat.errors import NotFoundError, PlatError
from plat.k8s.mapping import HPA_API, KNATIVE_API, LABEL_FUNCTION, LABEL_MANAGED, MANAGER

FIELD_MANAGER = "plat"
REQUEST_TIMEOUT = 30.0
APPLY_ATTEMPTS = 3
HPA_FALLBACK = "autoscaling/v2beta2"
# What `plat rm --target k8s` looks for: every kind plat applies per function.
# A Knative Service first: what it made goes with it.
REMOVABLE = (
    (KNATIVE_API, "Service"),
    (HPA_API, "HorizontalPodAutoscaler"),
    (HPA_FALLBACK, "HorizontalPodAutoscaler"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
)


class ClusterError(PlatError):
    status = 502
    code = "cluster"


class Missing(ClusterError):
    """The object (or its namespace) is not there."""

    status = 404
    code = "not_found"


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f" in namespace {meta['namespace']}" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {meta.get('name')}{where}"


def _api_message(exc: Any) -> tuple[str, dict[str, Any]]:
    """The server's Status message (and the Status) of an ApiException."""
    try:
        status: dict[str, Any] = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        status = {}
    return str(status.get("message") or exc.reason or exc), status


def api_error(exc: Any, what: str, namespace: str | None = None) -> PlatError:
    """A PlatError for a failed API call about ``what`` (pure: tested by cases)."""
    message, status = _api_message(exc)
    code = getattr(exc, "status", 0)
    if code == 409 and status.get("reason") == "Conflict" and "conflict" in message.lower():
        return ClusterError(
            f"applying {what} conflicts with another field manager: {message}",
            hint="someone changed these fields with another tool (kubectl edit, a controller); "
            "plat does not take them over: set them back, or remove them from that manager "
            "(e.g. `kubectl apply --server-side --field-manager=plat --force-conflicts`)",
        )
    if code == 404 and namespace and "namespaces" in message and namespace in message:
        return ClusterError(
            f"namespace {namespace} does not exist",
            hint=f"`kubectl create namespace {namespace}`, or pass --namespace",
        )
    if code in (401, 403):
        return ClusterError(
            f"the cluster refused {what}: {message}",
            hint="check the kube context's credentials and its RBAC permissions",
        )
    if code == 422:
        return ClusterError(f"the cluster found {what} invalid: {message}")
    if code == 404:
        return Missing(f"{what}: not found: {message}")
    return ClusterError(f"{what}: the cluster answered {code}: {message}")


def _already_exists(exc: Any) -> bool:
    reason = _api_message(exc)[1].get("reason")
    return getattr(exc, "status", 0) == 409 and reason == "AlreadyExists"


def _retry_created(send: Callable[[], Any]) -> Any:
    """``send`` (an apply), again when it lost a create race: an apply of an object
    that is not there yet creates it, and when two create at once, the API server
    can answer the loser 409 AlreadyExists instead of applying it as an update
    (v1.20 does). Applied again, the object is there, and the apply is an update."""
    from kubernetes.client.exceptions import ApiException

    for _ in range(APPLY_ATTEMPTS - 1):
        try:
            return send()
        except ApiException as exc:
            if not _already_exists(exc):
                raise
    return send()


def kubeconfig_files(env: Mapping[str, str]) -> str:
    """The kubeconfig path(s) as kubectl finds them: $KUBECONFIG, else ~/.kube/config."""
    return env.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


class Cluster:
    """One cluster, reached through one kubeconfig context."""

    def __init__(self, api: Any, context: str, namespace: str) -> None:
        self.api = api
        self.context = context
        self.namespace = namespace  # the context's namespace (or "default")
        self._dynamic: Any = None
        self._cache: str | None = None

    @classmethod
    def connect(cls, context: str | None, env: Mapping[str, str]) -> Cluster:
        """Raises PlatError when there is no kubeconfig or no such context."""
        from kubernetes import config as kube_config
        from kubernetes.client import Configuration

        files = kubeconfig_files(env)
        if not any(os.path.isfile(f) for f in files.split(os.pathsep) if f):
            raise ClusterError(
                f"no kubeconfig at {files}",
                hint="point KUBECONFIG at your cluster's config, or pass --context",
            )
        try:
            contexts, current = kube_config.list_kube_config_contexts(config_file=files)
            chosen = current
            if context is not None:
                chosen = next((c for c in contexts if c.get("name") == context), None)
                if chosen is None:
                    names = ", ".join(str(c.get("name")) for c in contexts) or "none"
                    raise ClusterError(
                        f"no kube context named {context!r} in {files}", hint=f"contexts: {names}"
                    )
            configuration = Configuration()
            configuration.retries = 1
            api = kube_config.new_client_from_config(
                config_file=files,
                context=context,
                persist_config=False,
                client_configuration=configuration,
            )
        except kube_config.ConfigException as exc:
            raise ClusterError(f"cannot use the kubeconfig {files}: {exc}") from None
        ns = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        return cls(api, str((chosen or {}).get("name") or context or ""), ns)

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _call(self, what: str, fn: Callable[[], Any], namespace: str | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            raise api_error(exc, what, namespace) from None
        except HTTPError as exc:
            raise ClusterError(
                f"the cluster at {self.host} cannot be reached ({what}): {exc}",
                hint=f"is the kube context {self.context!r} the right one, and the cluster up?",
            ) from None

    @property
    def dynamic(self) -> Any:
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            # Discovery cached for this process only: the client's default file is
            # shared by every process and user that reaches the same URL, and a
            # stale one (a CRD since removed) would misdirect an apply.
            fd, self._cache = tempfile.mkstemp(prefix="plat-kube-discovery-", suffix=".json")
            os.close(fd)
            os.unlink(self._cache)
            self._dynamic = self._call(
                "discovery", lambda: DynamicClient(self.api, cache_file=self._cache)
            )
        return self._dynamic

    def resource(self, api_version: str, kind: str) -> Any | None:
        """The API resource for ``kind`` in ``api_version``; None when not served."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._call(
                f"discovery of {kind}",
                lambda: self.dynamic.resources.get(api_version=api_version, kind=kind),
            )
        except ResourceNotFoundError:
            return None

    def hpa_version(self) -> str:
        """autoscaling/v2 where served (1.23+), else v2beta2 (the same spec: 1.20-1.25)."""
        if self.resource(HPA_API, "HorizontalPodAutoscaler") is not None:
            return HPA_API
        if self.resource(HPA_FALLBACK, "HorizontalPodAutoscaler") is not None:
            return HPA_FALLBACK
        raise ClusterError("the cluster serves neither autoscaling/v2 nor v2beta2")

    def has_knative(self) -> bool:
        return self.resource(KNATIVE_API, "Service") is not None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of ``obj`` (field manager plat, conflicts not forced)."""
        what = _describe(obj)
        resource = self.resource(obj["apiVersion"], obj["kind"])
        if resource is None:
            hint = (
                "install Knative Serving in the cluster, or deploy without --knative"
                if obj["apiVersion"] == KNATIVE_API
                else None
            )
            raise ClusterError(
                f"the cluster does not serve {obj['apiVersion']} {obj['kind']}", hint=hint
            )
        namespace = obj.get("metadata", {}).get("namespace")
        send = partial(
            self.dynamic.server_side_apply,
            resource,
            body=obj,
            namespace=namespace,
            field_manager=FIELD_MANAGER,
            force_conflicts=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        result = self._call(f"applying {what}", partial(_retry_created, send), namespace)
        return dict(result.to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it (or its kind) is not there."""
        resource = self.resource(api_version, kind)
        if resource is None:
            return None
        try:
            result = self._call(
                f"reading {kind} {name}",
                lambda: resource.get(
                    name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT
                ),
                namespace,
            )
        except Missing:
            return None
        return dict(result.to_dict())

    def remove(self, function: str, namespace: str, tenant: str) -> list[str]:
        """Delete every object plat applied for ``function`` in ``namespace`` (found by
        its labels); returns "Kind/name" of each. Raises NotFoundError when none."""
        selector = f"{LABEL_FUNCTION}={function},{LABEL_MANAGED}={MANAGER},plat.tenant={tenant}"
        removed: list[str] = []
        seen: set[tuple[str, str, str]] = set()
        for api_version, kind in REMOVABLE:
            resource = self.resource(api_version, kind)
            if resource is None:
                continue
            listing = self._call(
                f"listing {kind}s",
                partial(
                    resource.get,
                    namespace=namespace,
                    label_selector=selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                namespace,
            )
            group = api_version.rpartition("/")[0]
            for item in listing.items:
                name = item.metadata.name
                if (group, kind, name) in seen:  # an HPA is served at two versions
                    continue
                seen.add((group, kind, name))
                try:
                    delete = partial(
                        resource.delete,
                        name=name,
                        namespace=namespace,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                    self._call(f"deleting {kind} {name}", delete, namespace)
                except Missing:  # gone with its owner meanwhile
                    continue
                removed.append(f"{kind}/{name}")
        if not removed:
            raise NotFoundError(
                f"nothing of {function} in namespace {namespace} of context {self.context!r}",
                hint="pass the --namespace (and --context) it was deployed to",
            )
        return removed

    def close(self) -> None:
        self.api.close()
        if self._cache is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._cache)
