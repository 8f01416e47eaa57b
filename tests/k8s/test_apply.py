"""`plat deploy --target k8s` and `plat rm --target k8s` against a real kube-apiserver
(v1.20, with etcd; no kubelet, so nothing ever runs): what is applied, updates by
server-side apply, conflicts, the rollout wait, removal by label, tenants,
Knative through the same path, and hostile inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import PlatRunner, copy_example, free_port, make_runner
from tests.k8s.servers import ApiServer

IMAGE = "registry.example.com/hello-python:v1@sha256:" + "1" * 64
IMAGE2 = "registry.example.com/hello-python:v2@sha256:" + "2" * 64
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cli(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> PlatRunner:
    """The CLI with KUBECONFIG set; no daemon (--image needs none)."""
    runner = make_runner(tmp_path_factory.mktemp("cli"))
    return replace(runner, env=apiserver.env(runner.env))


@pytest.fixture(scope="module")
def kube(apiserver: ApiServer) -> Iterator[Any]:
    """The official client's dynamic client, to look at what plat applied."""
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient

    api = config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    yield DynamicClient(api)
    api.close()


def function(tmp: Path, name: str, extra: str = "") -> Path:
    folder = copy_example("hello-python", tmp)
    manifest = folder / "plat.yaml"
    text = manifest.read_text().replace("name: hello-python", f"name: {name}")
    manifest.write_text(text + extra)
    return folder


def get(kube: Any, api: str, kind: str, name: str, ns: str = "default") -> dict[str, Any]:
    return dict(
        kube.resources.get(api_version=api, kind=kind).get(name=name, namespace=ns).to_dict()
    )


def exists(kube: Any, api: str, kind: str, name: str, ns: str = "default") -> bool:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        get(kube, api, kind, name, ns)
        return True
    except NotFoundError:
        return False


def managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["manager"], f["operation"]) for f in obj["metadata"].get("managedFields") or []}


def deploy(
    cli: PlatRunner, folder: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cli.run("deploy", str(folder), "--target", "k8s", *args, check=check, timeout=120)


def test_deploy_applies_hardened_labelled_probed_objects(
    cli: PlatRunner, kube: Any, tmp_path: Path
) -> None:
    extra = "env: {GREETING: hi}\nscale: {min: 2, max: 5, concurrency: 4}\nsecrets: [db-password]\n"
    folder = function(tmp_path, "hardened", extra)
    proc = deploy(cli, folder, "--image", IMAGE, "--no-wait")
    assert "applied hardened to default (not waiting)" in proc.stdout
    assert "port-forward service/hardened 8080:80" in proc.stdout
    # The Secret is missing: said, with the command that makes it; never a value.
    assert "kubectl -n default create secret generic hardened-secrets" in proc.stderr
    assert not (cli.home / "run").exists(), "a deploy with --image needs no daemon"

    dep = get(kube, "apps/v1", "Deployment", "hardened")
    labels = {"plat.function": "hardened", "plat.version": "v1", "plat.tenant": "default"}
    assert labels.items() <= dep["metadata"]["labels"].items()
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert labels.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["httpHeaders"] == [{"name": "X-Plat-Probe", "value": "1"}]
    assert probe["port"] == "http"
    assert container["livenessProbe"]["httpGet"]["httpHeaders"] == probe["httpHeaders"]
    assert container["ports"][0]["containerPort"] == 8080
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GREETING"] == "hi" and env["PORT"] == "8080"
    assert env["PLAT_SECRETS_DIR"] == "/var/plat/secrets"
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {
        "/tmp": "tmp",
        "/var/plat/secrets": "secrets",
        "/var/openfaas/secrets": "secrets",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "hardened-secrets"
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"

    svc = get(kube, "v1", "Service", "hardened")
    assert svc["spec"]["selector"] == {"plat.function": "hardened", "plat.tenant": "default"}
    assert svc["spec"]["ports"][0]["port"] == 80
    # Kubernetes 1.20 serves no autoscaling/v2: the same spec went as v2beta2.
    hpa = get(kube, "autoscaling/v2beta2", "HorizontalPodAutoscaler", "hardened")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert labels.items() <= hpa["metadata"]["labels"].items()
    for obj in (dep, svc, hpa):
        assert managers(obj) == {("plat", "Apply")}, obj["metadata"]["managedFields"]


def test_a_second_apply_is_a_clean_update(cli: PlatRunner, kube: Any, tmp_path: Path) -> None:
    folder = function(tmp_path, "updated", "env: {GREETING: hi}\n")
    deploy(cli, folder, "--image", IMAGE, "--no-wait")
    before = get(kube, "apps/v1", "Deployment", "updated")
    manifest = folder / "plat.yaml"
    manifest.write_text(
        manifest.read_text().replace("GREETING: hi", "GREETING: hello")
        + "scale: {min: 3, max: 6}\n"
    )
    proc = deploy(cli, folder, "--image", IMAGE2, "--no-wait")
    assert "conflict" not in proc.stderr.lower()
    after = get(kube, "apps/v1", "Deployment", "updated")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["spec"]["replicas"] == 3
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GREETING", "value": "hello"} in container["env"]
    assert container["image"] == IMAGE2
    assert after["metadata"]["labels"]["plat.version"] == "v2"
    assert managers(after) == {("plat", "Apply")}
    hpa = get(kube, "autoscaling/v2beta2", "HorizontalPodAutoscaler", "updated")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    # The same apply again changes nothing.
    deploy(cli, folder, "--image", IMAGE2, "--no-wait")
    again = get(kube, "apps/v1", "Deployment", "updated")
    assert again["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


def test_a_field_another_manager_owns_is_a_clear_conflict_never_forced(
    cli: PlatRunner, kube: Any, tmp_path: Path
) -> None:
    folder = function(tmp_path, "contested")
    deploy(cli, folder, "--image", IMAGE, "--no-wait")
    deployments = kube.resources.get(api_version="apps/v1", kind="Deployment")
    # Someone scales it by hand with their own apply (as `kubectl scale` would).
    kube.server_side_apply(
        deployments,
        body={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "contested", "namespace": "default"},
            "spec": {"replicas": 7},
        },
        namespace="default",
        field_manager="someone-else",
        force_conflicts=True,
    )
    proc = deploy(cli, folder, "--image", IMAGE, "--no-wait", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "conflicts with another field manager" in proc.stderr
    assert "someone-else" in proc.stderr and ".spec.replicas" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert get(kube, "apps/v1", "Deployment", "contested")["spec"]["replicas"] == 7


def test_the_rollout_wait_times_out_with_a_clear_message(cli: PlatRunner, tmp_path: Path) -> None:
    folder = function(tmp_path, "waiting")
    started = time.monotonic()
    proc = deploy(cli, folder, "--image", IMAGE, "--wait-timeout", "2", check=False)
    assert proc.returncode == 1
    assert time.monotonic() - started < 60
    assert "Deployment waiting in namespace default did not become ready within 2 s" in proc.stderr
    assert "kubectl -n default describe deployment waiting" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rm_removes_what_plat_applied_by_label_and_nothing_else(
    cli: PlatRunner, kube: Any, tmp_path: Path
) -> None:
    deploy(cli, function(tmp_path / "a", "removed"), "--image", IMAGE, "--no-wait")
    deploy(cli, function(tmp_path / "b", "kept"), "--image", IMAGE, "--no-wait")
    proc = cli.run("rm", "removed", "--target", "k8s")
    assert "removed removed from default" in proc.stdout
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        assert f"{kind}/removed" in proc.stdout
    assert not exists(kube, "apps/v1", "Deployment", "removed")
    assert not exists(kube, "v1", "Service", "removed")
    assert not exists(kube, "autoscaling/v2beta2", "HorizontalPodAutoscaler", "removed")
    assert exists(kube, "apps/v1", "Deployment", "kept")
    again = cli.run("rm", "removed", "--target", "k8s", check=False)
    assert again.returncode == 1
    assert "nothing of removed in namespace default" in again.stderr


def test_a_tenant_deploys_to_its_own_namespace(cli: PlatRunner, kube: Any, tmp_path: Path) -> None:
    tenant = replace(cli, env={**cli.env, "PLAT_TENANT": "acme"})
    deploy(tenant, function(tmp_path, "owned"), "--image", IMAGE, "--no-wait")
    ns = get(kube, "v1", "Namespace", "acme", ns="")
    assert ns["metadata"]["labels"]["plat.tenant"] == "acme"
    dep = get(kube, "apps/v1", "Deployment", "owned", ns="acme")
    assert dep["metadata"]["labels"]["plat.tenant"] == "acme"
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PLAT_FUNCTION"] == "owned.acme"
    assert not exists(kube, "apps/v1", "Deployment", "owned")
    # The default tenant's rm does not see it; the tenant's does.
    assert cli.run("rm", "owned", "--target", "k8s", check=False).returncode == 1
    tenant.run("rm", "owned", "--target", "k8s")
    assert not exists(kube, "apps/v1", "Deployment", "owned", ns="acme")


@pytest.fixture(scope="module")
def knative(cli: PlatRunner, kube: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Knative's Service served by the API server (the stand-in CRD). Before it is,
    a Knative deploy is refused with the way out."""
    crds = kube.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    name = "services.serving.knative.dev"
    if not any(c.metadata.name == name for c in crds.get().items):
        folder = function(tmp_path_factory.mktemp("kn"), "kn-refused")
        proc = deploy(cli, folder, "--image", IMAGE, "--knative", "--no-wait", check=False)
        assert proc.returncode == 1
        assert "does not serve serving.knative.dev/v1 Service" in proc.stderr
        assert "install Knative Serving" in proc.stderr
        crds.create(body=yaml.safe_load((DATA / "knative-service-crd.yaml").read_text()))

    def established() -> bool:
        conditions = crds.get(name=name).to_dict().get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    deadline = time.monotonic() + 30
    while not established():
        assert time.monotonic() < deadline, "the CRD was not established"
        time.sleep(0.2)
    time.sleep(1)  # discovery catches up with a new group


@pytest.mark.usefixtures("knative")
def test_a_knative_service_goes_the_same_way(cli: PlatRunner, kube: Any, tmp_path: Path) -> None:
    folder = function(tmp_path, "kn", "scale: {min: 0, max: 3, concurrency: 6}\ntimeout: 45s\n")
    deploy(cli, folder, "--image", IMAGE, "--knative", "--no-wait")
    ksvc = get(kube, "serving.knative.dev/v1", "Service", "kn")
    template = ksvc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/max-scale"] == "3"
    assert annotations["autoscaling.knative.dev/target"] == "6"
    assert template["spec"]["containerConcurrency"] == 6
    assert template["spec"]["timeoutSeconds"] == 45
    assert ksvc["metadata"]["labels"]["plat.function"] == "kn"
    assert managers(ksvc) == {("plat", "Apply")}
    assert not exists(kube, "apps/v1", "Deployment", "kn")
    # Waiting: nothing makes it Ready here, so the wait ends at its timeout.
    waited = deploy(cli, folder, "--image", IMAGE, "--knative", "--wait-timeout", "2", check=False)
    assert waited.returncode == 1 and "Knative Service kn" in waited.stderr
    removed = cli.run("rm", "kn", "--target", "k8s")
    assert "Service/kn" in removed.stdout
    assert not exists(kube, "serving.knative.dev/v1", "Service", "kn")


def test_concurrent_deploys_of_one_function_all_apply(
    cli: PlatRunner, kube: Any, tmp_path: Path
) -> None:
    folder = function(tmp_path, "racing")
    with ThreadPoolExecutor(4) as pool:
        procs = list(
            pool.map(
                lambda _: deploy(cli, folder, "--image", IMAGE, "--no-wait", check=False), range(4)
            )
        )
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [p.stderr for p in procs]
    assert managers(get(kube, "apps/v1", "Deployment", "racing")) == {("plat", "Apply")}


def test_applies_racing_to_create_one_object_all_succeed(apiserver: ApiServer) -> None:
    """Eight applies of each new object released at once: the API server answers
    the losers of the create race 409 AlreadyExists, and apply applies again."""
    from plat.k8s.apply import Cluster

    clusters = [Cluster.connect(None, apiserver.env({})) for _ in range(8)]
    for cluster in clusters:  # discovery before the race, so the applies start together
        cluster.resource("v1", "Service")
    try:
        for round_ in range(6):
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"race-{round_}", "namespace": "default"},
                "spec": {
                    "selector": {"race": str(round_)},
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                },
            }
            barrier = threading.Barrier(len(clusters))

            def race(cluster: Cluster, body: dict[str, Any] = body, barrier: Any = barrier) -> str:
                barrier.wait()
                return str(cluster.apply(body)["metadata"]["name"])

            with ThreadPoolExecutor(len(clusters)) as pool:
                assert set(pool.map(race, clusters)) == {f"race-{round_}"}
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--context", "nope"], {}, "no kube context named 'nope'"),
        (["--context", "elsewhere"], {}, "namespace team does not exist"),
        (["--namespace", "Not_A_Namespace"], {}, "is not a namespace name"),
        ([], {"KUBECONFIG": "/nonexistent/kubeconfig"}, "no kubeconfig at /nonexistent/kubeconfig"),
        (["--image", "has space"], {}, "is not an image reference"),
    ],
)
def test_bad_targets_are_clear_errors(
    cli: PlatRunner, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    folder = function(tmp_path, "hostile")
    runner = replace(cli, env={**cli.env, **env})
    if "--image" not in args:
        args = [*args, "--image", IMAGE]
    proc = deploy(runner, folder, *args, "--no-wait", check=False)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_cluster_is_a_clear_error(
    cli: PlatRunner, apiserver: ApiServer, tmp_path: Path
) -> None:
    config = json.loads(apiserver.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead = tmp_path / "kubeconfig"
    dead.write_text(json.dumps(config))
    runner = replace(cli, env={**cli.env, "KUBECONFIG": str(dead)})
    proc = deploy(runner, function(tmp_path, "offline"), "--image", IMAGE, "--no-wait", check=False)
    assert proc.returncode == 1
    assert "cannot be reached" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_k8s_options_without_the_target_are_refused(cli: PlatRunner, tmp_path: Path) -> None:
    folder = function(tmp_path, "local")
    for args in (["--knative"], ["--context", "test"], ["--target", "mars"]):
        proc = cli.run("deploy", str(folder), *args, check=False)
        assert proc.returncode == 2, args
        assert "--target" in proc.stderr
    proc = cli.run("rm", "local", "--namespace", "x", check=False)
    assert proc.returncode == 2 and "--target k8s" in proc.stderr
    assert not (cli.home / "run").exists()


def _set_status(kube: Any, api: str, kind: str, name: str, status: dict[str, Any]) -> None:
    """Write an object's status as its controller would (there is none here)."""
    resource = kube.resources.get(api_version=api, kind=kind)
    obj = resource.get(name=name, namespace="default").to_dict()
    status = {"observedGeneration": obj["metadata"]["generation"], **status}
    resource.status.patch(
        body={"status": status},
        name=name,
        namespace="default",
        content_type="application/merge-patch+json",
    )


def _deploy_and_complete(
    cli: PlatRunner, folder: Path, args: list[str], complete: Any
) -> subprocess.CompletedProcess[str]:
    """`plat deploy --target k8s` waiting, while ``complete()`` plays the controller."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "plat", "deploy", str(folder), "--target", "k8s", *args],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                complete()
                break
            except Exception:
                assert time.monotonic() < deadline and proc.poll() is None, "never applied"
                time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_the_wait_ends_when_the_deployment_is_available(
    cli: PlatRunner, kube: Any, tmp_path: Path
) -> None:
    folder = function(tmp_path, "rolled", "scale: {min: 2, max: 4}\n")

    def complete() -> None:
        _set_status(
            kube,
            "apps/v1",
            "Deployment",
            "rolled",
            {
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
                ],
            },
        )

    proc = _deploy_and_complete(cli, folder, ["--image", IMAGE, "--wait-timeout", "60"], complete)
    assert proc.returncode == 0, proc.stderr
    assert "rolled is rolled out in default" in proc.stdout
    assert "http://rolled.default.svc.cluster.local/" in proc.stdout


@pytest.mark.usefixtures("knative")
def test_the_wait_ends_when_the_knative_service_is_ready(
    cli: PlatRunner, kube: Any, tmp_path: Path
) -> None:
    folder = function(tmp_path, "knready")

    def complete() -> None:
        _set_status(
            kube,
            "serving.knative.dev/v1",
            "Service",
            "knready",
            {
                "url": "http://knready.default.example.com",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        )

    args = ["--image", IMAGE, "--knative", "--wait-timeout", "60"]
    proc = _deploy_and_complete(cli, folder, args, complete)
    assert proc.returncode == 0, proc.stderr
    assert "URL:  http://knready.default.example.com" in proc.stdout
    cli.run("rm", "knready", "--target", "k8s")
