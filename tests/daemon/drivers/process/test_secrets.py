"""Secrets of process instances: real shim subprocesses read them through
``context.secret`` from a private tmpfs folder that PLAT_SECRETS_DIR names; the
folder goes with the process, and the value is nowhere else."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from plat.daemon.drivers.base import InstanceSpec
from plat.daemon.drivers.process.backend import ProcessBackend
from plat.daemon.drivers.process.driver import process_driver
from plat.daemon.drivers.process.environment import instance_environment
from plat.daemon.drivers.secretfiles import SecretFiles
from plat.daemon.drivers.secretvalue import SecretValue
from plat.errors import PlatError
from plat.paths import Home
from tests.daemon.drivers.process.test_backend import NODE, artifact, ready, spec

VALUE = b"s3cr3t-value-9f2e-never-elsewhere"

PY_HANDLER = """\
import os

def handle(event, context):
    folder = os.environ["PLAT_SECRETS_DIR"]
    return {
        "db": context.secret("db"),
        "blob": context.secret_bytes("blob").hex(),
        "dir": folder,
        "files": sorted(os.listdir(folder)),
        "writable": os.access(os.path.join(folder, "db"), os.W_OK) and os.geteuid() != 0,
    }
"""

NODE_HANDLER = """\
module.exports = async (event, context) => ({
  db: context.secret('db'),
  dir: process.env.PLAT_SECRETS_DIR,
});
"""

SECRETS = {"db": SecretValue(VALUE), "blob": SecretValue(b"\x00\xff")}


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ProcessBackend]:
    b = ProcessBackend("test-daemon", secret_files=SecretFiles(tmp_path / "secret-files"))
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def with_secrets(image: str, handler: str, secrets: dict[str, SecretValue]) -> InstanceSpec:
    return replace(spec(image, handler), secrets=secrets)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_a_python_instance_reads_its_secrets_from_its_own_folder(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    inst = await backend.start(with_secrets(image, "handler.handle", SECRETS), "i-sec")
    await ready(backend, session, inst)
    async with session.get(f"http://{inst.address}/") as resp:
        assert resp.status == 200
        answer = await resp.json()
    folder = tmp_path / "secret-files" / "i-sec"
    assert answer == {
        "db": VALUE.decode(),
        "blob": "00ff",
        "dir": str(folder),
        "files": ["blob", "db"],
        "writable": False,
    }
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o500
    assert stat.S_IMODE(os.stat(folder / "db").st_mode) == 0o400
    # Not in the instance's environment, nor its log.
    environ = Path(f"/proc/{inst.backend_ref}/environ").read_bytes()
    assert VALUE not in environ and f"PLAT_SECRETS_DIR={folder}".encode() in environ
    assert VALUE.decode() not in await backend.logs(inst, tail=1000)
    await backend.stop(inst)
    assert not folder.exists()
    assert os.listdir(tmp_path / "secret-files") == []


async def test_the_folder_goes_when_the_process_dies(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    inst = await backend.start(with_secrets(image, "handler.handle", SECRETS), "i-crash")
    await ready(backend, session, inst)
    folder = tmp_path / "secret-files" / "i-crash"
    assert folder.is_dir()
    os.killpg(int(inst.backend_ref), signal.SIGKILL)
    await until(lambda: not folder.exists())


async def test_an_instance_without_secrets_has_no_folder_and_no_variable(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": "def handle(e, c): return 'ok'\n"})
    inst = await backend.start(spec(image, "handler.handle"), "plain")
    await ready(backend, session, inst)
    environ = Path(f"/proc/{inst.backend_ref}/environ").read_bytes()
    assert b"PLAT_SECRETS_DIR=" not in environ
    assert os.listdir(tmp_path / "secret-files") == []


async def test_a_failed_start_leaves_no_secret_files(tmp_path: Path) -> None:
    files = SecretFiles(tmp_path / "secret-files")
    backend = ProcessBackend("d", python=str(tmp_path / "no-python"), secret_files=files)
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    try:
        with pytest.raises(PlatError, match="cannot start"):
            await backend.start(with_secrets(image, "handler.handle", SECRETS), "i1")
        assert os.listdir(files.root) == []
    finally:
        await backend.close()


async def test_a_bad_secret_name_fails_the_start_cleanly(
    tmp_path: Path, backend: ProcessBackend
) -> None:
    image = await artifact(tmp_path, "python", {"handler.py": PY_HANDLER})
    bad = {"../escape": SecretValue(VALUE)}
    with pytest.raises(PlatError, match="not a valid secret name"):
        await backend.start(with_secrets(image, "handler.handle", bad), "i1")
    assert await backend.list() == []
    assert os.listdir(tmp_path / "secret-files") == []
    assert not (tmp_path / "escape").exists()


@NODE
async def test_a_node_instance_reads_its_secrets(
    tmp_path: Path, backend: ProcessBackend, session: aiohttp.ClientSession
) -> None:
    image = await artifact(tmp_path, "node", {"handler.js": NODE_HANDLER})
    inst = await backend.start(with_secrets(image, "handler.js", SECRETS), "n-sec")
    await ready(backend, session, inst)
    async with session.get(f"http://{inst.address}/") as resp:
        answer = await resp.json()
    assert answer == {"db": VALUE.decode(), "dir": str(tmp_path / "secret-files" / "n-sec")}
    await backend.close()
    assert not (tmp_path / "secret-files").exists()


def test_the_variable_names_the_folder_over_the_manifests(tmp_path: Path) -> None:
    base = spec("process:/x", "handler.handle")
    custom = replace(base, env={**base.env, "PLAT_SECRETS_DIR": "/mine"})
    env = instance_environment(custom, tmp_path, "python", 1234, {}, tmp_path / "s")
    assert env["PLAT_SECRETS_DIR"] == str(tmp_path / "s")
    # Without secret files, a manifest's own value is left alone.
    assert instance_environment(custom, tmp_path, "python", 1234, {})["PLAT_SECRETS_DIR"] == "/mine"


def test_the_driver_sweeps_what_an_earlier_daemon_left(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    root = SecretFiles.default_root(home.root, f"{home.daemon_id()}-process", env=env)
    SecretFiles(root).write("stale", {"db": SecretValue(VALUE)}, uid=None, gid=None)
    try:
        driver = process_driver(home, env)
        assert isinstance(driver.backend, ProcessBackend)
        assert driver.backend.secret_files().root == root
        assert os.listdir(root) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
