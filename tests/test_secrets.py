"""Secrets end to end in real containers: files at both paths, in none of the
places a value must never be, rolled under load when set again, and read from a
KV v2 server (Vault's wire format) that changes and goes away."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.secrets.kvserver import TOKEN, KVServer
from tests.fixtures import PlatRunner, daemon_session, make_runner, wait_for
from tests.functions import write_python_function

pytestmark = pytest.mark.container

READ = """
import os

def handle(event, context):
    name = event.query.get("name", "db")
    plat = open("/var/plat/secrets/" + name).read()
    openfaas = open("/var/openfaas/secrets/" + name).read()
    st = os.stat("/var/plat/secrets/" + name)
    return {
        "plat": plat,
        "openfaas": openfaas,
        "shim": context.secret(name),
        "mode": oct(st.st_mode & 0o777),
        "uid": st.st_uid,
        "me": os.getuid(),
        "env": os.environ.get("PLAT_SECRETS_DIR"),
    }
"""


class KVThread:
    """The KV v2 test server on its own event loop, for a synchronous test."""

    def __init__(self) -> None:
        self.server = KVServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.server.start())

    def run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def vault() -> Iterator[KVThread]:
    kv = KVThread()
    yield kv
    kv.close()


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory, vault: KVThread) -> Iterator[PlatRunner]:
    runner = make_runner(tmp_path_factory.mktemp("secrets"))
    runner.env.update(
        {"VAULT_ADDR": vault.server.url, "VAULT_TOKEN": TOKEN, "PLAT_SECRETS_TTL": "1s"}
    )
    with daemon_session(runner):
        yield runner


def value() -> str:
    return f"s3cret-{uuid.uuid4().hex}"


def read(plat: PlatRunner, name: str = "db", fn: str = "reader") -> dict[str, object]:
    res = plat.http("GET", f"/function/{fn}?name={name}")
    assert res.status == 200, res.body
    return res.json()  # type: ignore[return-value]


def test_a_function_naming_a_missing_secret_is_refused_with_its_name(
    plat: PlatRunner, tmp_path: Path
) -> None:
    folder = write_python_function(tmp_path, "lonely", READ, extra_manifest="secrets: [nope]\n")
    proc = plat.run("deploy", str(folder), check=False)
    assert proc.returncode == 1
    assert "nope" in proc.stderr and "plat secret set nope" in proc.stderr
    assert not plat.instances_of("lonely")


def test_a_secret_is_a_private_file_at_both_paths_and_nowhere_else(
    plat: PlatRunner, tmp_path: Path
) -> None:
    secret = value()
    plat.run("secret", "set", "db", input=secret)
    folder = write_python_function(tmp_path, "reader", READ, extra_manifest="secrets: [db]\n")
    plat.run("deploy", str(folder))
    got = read(plat)
    assert got["plat"] == got["openfaas"] == got["shim"] == secret
    assert got["mode"] == "0o400" and got["uid"] == got["me"] == 10001
    assert got["env"] == "/var/plat/secrets"

    [container] = plat.instances_of("reader", "status=running")
    places = {
        "podman inspect": subprocess.run(
            ["podman", "inspect", container], capture_output=True, text=True, check=True
        ).stdout,
        "environment": subprocess.run(
            ["podman", "exec", container, "env"], capture_output=True, text=True, check=True
        ).stdout,
        "container diff": subprocess.run(
            ["podman", "diff", container], capture_output=True, text=True, check=True
        ).stdout,
        "logs": plat.run("logs", "reader", "--tail", "1000").stdout,
        "describe": plat.run("describe", "reader", "--json").stdout,
        "secret ls": plat.run("secret", "ls", "--json").stdout,
        "daemon log": (plat.home / "daemon.log").read_text(),
    }
    image = json.loads(places["podman inspect"])[0]["ImageName"]
    saved = tmp_path / "image.tar"
    subprocess.run(["podman", "image", "save", "-o", str(saved), image], check=True)
    assert secret.encode() not in saved.read_bytes(), "the value is in an image layer"
    for where, text in places.items():
        assert secret not in text, f"the value is in {where}"
    assert "/var/plat/secrets" in places["podman inspect"]  # the mount is there, not the value
    # an error message about the secret never carries it either
    failed = plat.run("secret", "rm", "db", check=False)
    assert failed.returncode == 1 and "reader" in failed.stderr and secret not in failed.stderr


def test_setting_a_secret_in_use_rolls_its_function_with_no_failed_request(
    plat: PlatRunner,
) -> None:
    before = read(plat)["plat"]
    failures: list[str] = []
    served: list[object] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            res = plat.http("GET", "/function/reader?name=db", timeout=30)
            if res.status != 200:
                failures.append(f"{res.status} {res.body[:200]!r}")
            else:
                served.append(res.json()["plat"])  # type: ignore[index]

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        secret = value()
        out = plat.run("secret", "set", "db", input=secret).stdout
        assert "reader" in out  # the function that was rolled is named
        assert wait_for(lambda: served and served[-1] == secret, timeout=30)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    assert before in served and secret in served and len(served) > 20


def test_a_vault_secret_is_read_refreshed_and_kept_while_vault_is_away(
    plat: PlatRunner, vault: KVThread, tmp_path: Path
) -> None:
    first, second = value(), value()
    vault.server.put("secret", "app", {"key": first})
    folder = write_python_function(
        tmp_path,
        "vaulted",
        READ,
        extra_manifest='secrets: [{name: api, vault: "secret/app#key"}]\n',
    )
    plat.run("deploy", str(folder))
    assert read(plat, "api", "vaulted")["plat"] == first
    vault.server.put("secret", "app", {"key": second})
    assert wait_for(lambda: read(plat, "api", "vaulted")["plat"] == second, timeout=30)
    vault.run(vault.server.stop())
    try:
        time.sleep(3)  # three refreshes find no Vault
        assert read(plat, "api", "vaulted")["plat"] == second
        log = (plat.home / "daemon.log").read_text()
        assert "Vault" in log or "vault" in log
        assert TOKEN not in log and second not in log and first not in log
    finally:
        vault.run(vault.server.start())
