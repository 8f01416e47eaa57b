"""Every rendered manifest against the official schemas: Kubernetes 1.25, 1.29, 1.33
and 1.37 with kubernetes-validate (strict: an unknown field is an error), and the
Knative Service against Knative Serving's schema (the models cloudcoil generates
from its CRD), made strict the same way, with jsonschema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from plat.k8s.mapping import Release, documents
from plat.k8s.render import render
from plat.manifest import load_manifest, validate_manifest
from tests.fixtures import EXAMPLES

VERSIONS = ("1.25", "1.29", "1.33", "1.37")
IMAGE = "registry.example.com/team/hello:0123456789ab@sha256:" + "f" * 64


def manifests() -> list[tuple[str, Release]]:
    """Releases covering what the mapping branches on: each runtime, secrets, a
    tenant, min 0, a name starting with a digit, every field of plat.yaml set."""
    out = []
    for example in ("hello-python", "hello-node", "hello-dockerfile"):
        m = load_manifest(EXAMPLES / example)
        out.append((example, Release(m, IMAGE, "default", "0123456789ab")))
    full = validate_manifest(
        {
            "name": "9lives",
            "runtime": "python",
            "handler": "app.handle",
            "env": {"A": "1", "EMPTY": ""},
            "auth": "public",
            "timeout": "90s",
            "resources": {"memory": "1Gi", "cpu": 2, "pids": 64},
            "scale": {"min": 0, "max": 10, "concurrency": 50},
            "secrets": ["db-password", {"name": "api.key", "vault": "secret/app#key"}],
        }
    )
    out.append(("full", Release(full, IMAGE, "acme", "0123456789ab", tenant="acme")))
    return out


CASES = manifests()


def strict(schema: Any) -> Any:
    """``schema`` with unknown properties refused wherever properties are listed
    (as a server with strict field validation refuses them)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def knative_schema() -> Any:
    from cloudcoil.models.knative_serving.serving import v1

    return strict(v1.Service.model_json_schema(by_alias=True))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("label", "release"), CASES, ids=[c[0] for c in CASES])
def test_rendered_objects_are_valid_kubernetes(label: str, release: Release, version: str) -> None:
    docs = documents(release)
    kinds = [d["kind"] for d in docs]
    assert kinds[-3:] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(("label", "release"), CASES, ids=[c[0] for c in CASES])
def test_the_knative_service_is_valid_knative(label: str, release: Release) -> None:
    schema = knative_schema()
    (ksvc,) = [d for d in documents(release, knative=True) if d["kind"] == "Service"]
    jsonschema.validate(ksvc, schema)


def test_the_schemas_catch_a_wrong_field() -> None:
    """The checks above can fail: a misspelt field is refused by both."""
    _, release = CASES[0]
    deployment = copy.deepcopy(documents(release)[0])
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFS"):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    ksvc = copy.deepcopy(documents(release, knative=True)[0])
    ksvc["spec"]["template"]["spec"]["containerConcurency"] = 3
    with pytest.raises(jsonschema.ValidationError, match="containerConcurency"):
        jsonschema.validate(ksvc, knative_schema())


def test_the_rendered_yaml_is_the_objects(tmp_path: Path) -> None:
    """`plat k8s render` output: one YAML stream, every document an object above."""
    for _, release in CASES:
        for knative in (False, True):
            docs = documents(release, knative=knative)
            parsed = [d for d in yaml.safe_load_all(render(release, docs)) if d is not None]
            assert parsed == docs
