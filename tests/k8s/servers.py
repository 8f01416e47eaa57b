"""Real servers on loopback for the Kubernetes tests: an OCI registry (Debian's
docker-registry, Distribution 2.8) and etcd + kube-apiserver (no kubelet, so no
pod ever runs), each started by a test, on free ports, in a temporary folder.

kube-apiserver is built once per machine by scripts/setup.sh from Debian's
`kubernetes` source package (docs/host-setup.md); PLAT_KUBE_APISERVER names
another binary.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import free_port

APISERVER_CACHE = "/var/cache/plat/kube-apiserver-[0-9]*"
TOKEN = "plat-test-token"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait(
    check: object, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} did not come up within {timeout:g} s:\n{log.read_text()[-3000:]}")


def _status(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -- the registry ------------------------------------------------------------


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file (the registry accepts only bcrypt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # the C library's crypt(3); gone in Python 3.13
        except ImportError:
            pytest.skip("no crypt module to make a bcrypt hash with")
    return str(crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH)))


@contextmanager
def registry(tmp: Path, *, users: dict[str, str] | None = None) -> Iterator[str]:
    """A registry at 127.0.0.1:<free port> storing under ``tmp``; yields HOST:PORT.
    ``users``: htpasswd basic auth with these {user: password}."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: run scripts/setup.sh")
    tmp.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    config = [
        "version: 0.1",
        "log: {level: warn}",
        f"storage: {{filesystem: {{rootdirectory: {tmp / 'data'}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: '{address}', secret: plat-tests}}",
    ]
    if users:
        htpasswd = tmp / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in users.items()))
        config.append(f"auth: {{htpasswd: {{realm: plat-tests, path: {htpasswd}}}}}")
    (tmp / "config.yml").write_text("\n".join(config) + "\n")
    log = tmp / "registry.log"
    proc = _start([binary, "serve", str(tmp / "config.yml")], log)
    try:
        _wait(lambda: _status(f"http://{address}/v2/") in (200, 401), proc, log, "the registry", 30)
        yield address
    finally:
        _stop(proc)


def registry_get(
    address: str, path: str, *, auth: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET (or HEAD, for manifests) on the registry's API, accepting OCI and Docker manifests."""
    headers = {
        "Accept": "application/vnd.oci.image.manifest.v1+json, "
        "application/vnd.docker.distribution.manifest.v2+json"
    }
    if auth:
        headers["Authorization"] = auth
    method = "HEAD" if "/manifests/" in path else "GET"
    req = urllib.request.Request(f"http://{address}{path}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- etcd + kube-apiserver ---------------------------------------------------


@dataclass(frozen=True)
class ApiServer:
    url: str
    kubeconfig: Path
    ca: Path

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "KUBECONFIG": str(self.kubeconfig)}


def apiserver_binary() -> str:
    configured = os.environ.get("PLAT_KUBE_APISERVER")
    if configured:
        return configured
    found = sorted(glob.glob(APISERVER_CACHE))
    if not found:
        pytest.fail(
            "no kube-apiserver binary: scripts/setup.sh builds it into /var/cache/plat "
            "(or set PLAT_KUBE_APISERVER)"
        )
    return found[-1]


def _kubeconfig(path: Path, url: str, ca: Path, namespace: str = "default") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "admin", "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": "test",
                "context": {"cluster": "test", "user": "admin", "namespace": namespace},
            },
            {
                "name": "elsewhere",
                "context": {"cluster": "test", "user": "admin", "namespace": "team"},
            },
        ],
        "current-context": "test",
    }
    path.write_text(json.dumps(config))


@contextmanager
def kube_apiserver(tmp: Path) -> Iterator[ApiServer]:
    """etcd and kube-apiserver on free loopback ports, with a kubeconfig (contexts
    ``test``, namespace default, and ``elsewhere``, namespace team)."""
    binary = apiserver_binary()
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.fail("etcd is not installed (Debian etcd-server): run scripts/setup.sh")
    tmp.mkdir(parents=True, exist_ok=True)
    client, peer = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client}"
    etcd_log = tmp / "etcd.log"
    etcd_proc = _start(
        [
            etcd,
            "--data-dir", str(tmp / "etcd"),
            "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        ],
        etcd_log,
    )  # fmt: skip
    procs = [etcd_proc]
    try:
        _wait(lambda: _status(f"{etcd_url}/health") == 200, etcd_proc, etcd_log, "etcd", 30)
        key = tmp / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        pub = tmp / "sa.pub"
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
            check=True,
            capture_output=True,
        )
        (tmp / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
        port = free_port()
        certs = tmp / "certs"
        log = tmp / "apiserver.log"
        proc = _start(
            [
                binary,
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                "--insecure-port=0",
                f"--cert-dir={certs}",
                f"--service-account-key-file={pub}",
                f"--service-account-signing-key-file={key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--token-auth-file={tmp / 'tokens.csv'}",
                "--authorization-mode=AlwaysAllow",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                "--disable-admission-plugins=ServiceAccount",
            ],
            log,
        )
        procs.append(proc)
        url = f"https://127.0.0.1:{port}"
        ca = certs / "apiserver.crt"  # self-signed: the serving certificate and its CA
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # Ready, and the default namespace made by the server's bootstrap.
        _wait(
            lambda: _status(f"{url}/api/v1/namespaces/default", auth, insecure) == 200,
            proc,
            log,
            "kube-apiserver",
            90,
        )
        kubeconfig = tmp / "kubeconfig"
        _kubeconfig(kubeconfig, url, ca)
        yield ApiServer(url, kubeconfig, ca)
    finally:
        for p in reversed(procs):
            _stop(p)
