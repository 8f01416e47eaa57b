"""plat.daemon.drivers.process.artifacts and .dependencies: the folders the process backend
runs (real pip, npm)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plat.daemon.drivers.process import artifacts, dependencies
from plat.daemon.drivers.process.artifacts import prepare_artifact, prune_artifacts
from plat.daemon.drivers.process.dependencies import node_packages, python_packages
from plat.daemon.drivers.process.layout import (
    ARTIFACT_META,
    DEPS_ROOT,
    TMP_PREFIX,
    artifact_dir,
    artifact_runtime,
)
from plat.errors import BuildError, PlatError
from plat.ignore import UnsafeFolderError
from plat.manifest import Manifest

HANDLER = "def handle(event, context):\n    return 'v1'\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def python_function(root: Path, requirements: str = "# none\n") -> Path:
    return write(root, {"handler.py": HANDLER, "requirements.txt": requirements})


async def prepare(
    source: Path, work: Path, name: str = "fn", runtime: str = "python"
) -> tuple[str, Path, bool, list[str]]:
    lines: list[str] = []
    version, ref, cached = await prepare_artifact(
        Manifest(name=name, runtime=runtime), source, work, os.environ, lines.append
    )
    return version, artifact_dir(ref), cached, lines


def leftovers(work: Path) -> list[Path]:
    return [p for p in work.rglob(f"{TMP_PREFIX}*")]


async def test_layout_and_image_ref(tmp_path: Path) -> None:
    source = python_function(tmp_path / "src")
    write(source, {"lib/util.py": "X = 1\n", "notes.log": "x", ".platignore": "*.log\n"})
    work = tmp_path / "work"
    version, folder, cached, _ = await prepare(source, work)

    assert len(version) == 12 and all(c in "0123456789abcdef" for c in version)
    assert folder == work / "fn" / version
    assert not cached
    app = sorted(p.relative_to(folder / "app").as_posix() for p in (folder / "app").rglob("*"))
    assert app == [".platignore", "handler.py", "lib", "lib/util.py", "requirements.txt"]
    assert (folder / "deps").is_symlink()
    assert not os.path.isabs(os.readlink(folder / "deps"))
    assert (folder / "deps").resolve().parent == (work / DEPS_ROOT).resolve()
    assert artifact_runtime(folder) == "python"
    meta = json.loads((folder / ARTIFACT_META).read_text())
    assert meta == {"function": "fn", "version": version, "runtime": "python"}
    assert leftovers(work) == []


async def test_version_is_stable_and_cached(tmp_path: Path) -> None:
    source = python_function(tmp_path / "src")
    work = tmp_path / "work"
    v1, folder, cached1, _ = await prepare(source, work)
    copied = (folder / "app" / "handler.py").stat()
    v2, folder2, cached2, lines = await prepare(source, work)
    assert (v2, folder2) == (v1, folder)
    assert not cached1 and cached2
    assert any("up to date" in line for line in lines)
    # Nothing was copied again.
    assert (folder / "app" / "handler.py").stat().st_ino == copied.st_ino
    # Only content counts, not timestamps.
    os.utime(source / "handler.py", (1, 1))
    assert (await prepare(source, work))[0] == v1


async def test_code_edit_makes_a_new_version_and_keeps_the_old(tmp_path: Path) -> None:
    source = python_function(tmp_path / "src")
    work = tmp_path / "work"
    v1, folder1, _, _ = await prepare(source, work)
    (source / "handler.py").write_text(HANDLER.replace("v1", "v2"))
    v2, folder2, cached, _ = await prepare(source, work)
    assert v2 != v1 and not cached
    assert "v2" in (folder2 / "app" / "handler.py").read_text()
    assert "v1" in (folder1 / "app" / "handler.py").read_text()
    assert os.readlink(folder1 / "deps") == os.readlink(folder2 / "deps")


async def test_ignored_file_changes_keep_the_version(tmp_path: Path) -> None:
    source = python_function(tmp_path / "src")
    write(source, {".platignore": "scratch/\n"})
    work = tmp_path / "work"
    v1 = (await prepare(source, work))[0]
    write(source, {"scratch/a.txt": "anything", "__pycache__/handler.cpython-311.pyc": "x"})
    assert (await prepare(source, work))[0] == v1


async def test_runtime_is_part_of_the_version(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"handler.js": "module.exports = () => 1;\n"})
    v_node = (await prepare(source, tmp_path / "w1", runtime="node"))[0]
    v_py = (await prepare(source, tmp_path / "w2", runtime="python"))[0]
    assert v_node != v_py


async def test_dockerfile_runtime_is_refused(tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"Dockerfile": "FROM scratch\n"})
    with pytest.raises(PlatError) as info:
        await prepare(source, tmp_path / "work", runtime="dockerfile")
    assert "cannot run `dockerfile` functions" in info.value.message
    assert info.value.hint is not None and "--backend container" in info.value.hint
    assert not (tmp_path / "work").exists()


def test_package_detection() -> None:
    assert not python_packages("")
    assert not python_packages("# only a comment\n\n   \n")
    assert python_packages("# x\nhumanize==4.17.0\n")
    assert not node_packages('{"name": "x", "devDependencies": {"jest": "1"}}')
    assert not node_packages('{"dependencies": {}}')
    assert node_packages('{"dependencies": {"ms": "2"}}')
    assert node_packages('{"optionalDependencies": {"ms": "2"}}')
    with pytest.raises(BuildError, match="not valid JSON"):
        node_packages("{nope")
    with pytest.raises(BuildError, match="JSON object"):
        node_packages("[]")


def test_artifact_dir_rejects_other_images(tmp_path: Path) -> None:
    assert artifact_dir(f"process:{tmp_path}") == tmp_path
    for image in ("localhost/plat/fn:abc", "process:"):
        with pytest.raises(PlatError, match="not a process artifact"):
            artifact_dir(image)
    with pytest.raises(PlatError, match="not a prepared function folder"):
        artifact_runtime(tmp_path)


async def test_pip_install_once_shared_between_versions(tmp_path: Path) -> None:
    """A real install from the package index; the second version reuses it."""
    source = python_function(tmp_path / "src", "humanize==4.17.0\n")
    work = tmp_path / "work"
    v1, folder1, _, lines1 = await prepare(source, work)
    assert any(line.startswith("$ ") and " pip install " in line for line in lines1)
    deps = (folder1 / "deps").resolve()
    assert deps.name.startswith("python-") and (deps / "humanize").is_dir()
    probe = subprocess.run(
        [sys.executable, "-c", "import humanize; print(humanize.intcomma(1234567))"],
        env={**os.environ, "PYTHONPATH": str(folder1 / "deps")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "1,234,567"

    (source / "handler.py").write_text(HANDLER.replace("v1", "v2"))
    v2, folder2, cached, lines2 = await prepare(source, work)
    assert v2 != v1 and not cached
    assert (folder2 / "deps").resolve() == deps
    assert not any(line.startswith("$ ") for line in lines2)
    # Another function with the same requirements shares the folder too.
    other = python_function(tmp_path / "other", "humanize==4.17.0\n")
    _, folder3, _, _ = await prepare(other, work, name="other")
    assert (folder3 / "deps").resolve() == deps
    assert [p.name for p in (work / DEPS_ROOT).iterdir()] == [deps.name]


async def test_failed_pip_install_raises_with_tail_and_leaves_nothing(tmp_path: Path) -> None:
    source = python_function(tmp_path / "src", "plat-test-no-such-package-7f3a9==0.0.1\n")
    work = tmp_path / "work"
    with pytest.raises(BuildError) as info:
        await prepare(source, work)
    err = info.value
    assert "requirements.txt" in err.message
    assert "plat-test-no-such-package-7f3a9" in err.log_tail
    assert err.hint is not None and "requirements.txt" in err.hint
    assert not (work / "fn").exists()
    assert list((work / DEPS_ROOT).iterdir()) == []


async def test_cancelled_install_leaves_no_half_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def slow_install(target: Path, env: object, on_line: object) -> None:
        (target / "half-installed").write_text("x")
        started.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(dependencies, "_pip_install", slow_install)
    source = python_function(tmp_path / "src", "humanize==4.17.0\n")
    work = tmp_path / "work"
    task = asyncio.create_task(prepare(source, work))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list((work / DEPS_ROOT).iterdir()) == []
    assert not (work / "fn").exists()


async def test_cancelling_the_installer_kills_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    cmd = ["sh", "-c", f"echo $$ > {pid_file}; echo working; exec sleep 60"]
    lines: list[str] = []
    task = asyncio.create_task(
        dependencies._run_installer(
            cmd, tmp_path, dict(os.environ), lines.append, what="x", hint="y"
        )
    )
    for _ in range(500):
        if "working" in lines:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_failed_installer_tail_is_bounded(tmp_path: Path) -> None:
    cmd = ["sh", "-c", "for i in $(seq 1 100); do echo line-$i; done; exit 3"]
    with pytest.raises(BuildError) as info:
        await dependencies._run_installer(
            cmd, tmp_path, dict(os.environ), lambda _l: None, what="x", hint="y"
        )
    tail = info.value.log_tail.splitlines()
    assert len(tail) == dependencies.TAIL_LINES
    assert tail[-1] == "line-100"
    assert "exit 3" in info.value.message


async def test_node_without_dependencies_skips_npm(tmp_path: Path) -> None:
    source = write(
        tmp_path / "src",
        {"handler.js": "module.exports = () => 1;\n", "package.json": '{"dependencies": {}}'},
    )
    _, folder, _, lines = await prepare(source, tmp_path / "work", runtime="node")
    assert not any(line.startswith("$ ") for line in lines)
    assert (folder / "node_modules").is_symlink()
    assert (folder / "node_modules").resolve() == (folder / "deps" / "node_modules").resolve()
    assert artifact_runtime(folder) == "node"


async def test_npm_install_once_shared_between_versions(tmp_path: Path) -> None:
    """A real install from the npm registry (one tiny package)."""
    package = {"name": "fn", "private": True, "dependencies": {"is-number": "7.0.0"}}
    source = write(
        tmp_path / "src",
        {"handler.js": "module.exports = () => 1;\n", "package.json": json.dumps(package)},
    )
    work = tmp_path / "work"
    v1, folder1, _, lines1 = await prepare(source, work, runtime="node")
    assert any(line.startswith("$ ") and "npm" in line for line in lines1)
    deps = (folder1 / "deps").resolve()
    assert (deps / "node_modules" / "is-number" / "package.json").is_file()
    (source / "handler.js").write_text("module.exports = () => 2;\n")
    v2, folder2, _, lines2 = await prepare(source, work, runtime="node")
    assert v2 != v1 and (folder2 / "deps").resolve() == deps
    assert not any(line.startswith("$ ") for line in lines2)


def test_prune_keeps_what_is_asked_and_collects_unused_deps(tmp_path: Path) -> None:
    work = tmp_path / "work"
    deps_root = work / DEPS_ROOT
    for key in ("python-used", "python-unused-old", "python-unused-new"):
        (deps_root / key).mkdir(parents=True)
    for name, version, key in (
        ("fn", "aaa", "python-used"),
        ("fn", "bbb", "python-unused-old"),
        ("other", "ccc", "python-used"),
    ):
        folder = work / name / version
        (folder / "app").mkdir(parents=True)
        (folder / "deps").symlink_to(os.path.relpath(deps_root / key, folder))
    stale_tmp = work / "fn" / f"{TMP_PREFIX}ddd-1234"
    fresh_tmp = work / "fn" / f"{TMP_PREFIX}eee-5678"
    stale_tmp.mkdir()
    fresh_tmp.mkdir()
    long_ago = time.time() - 2 * artifacts.STALE_TMP_SECONDS
    for path in (stale_tmp, deps_root / "python-unused-old"):
        os.utime(path, (long_ago, long_ago))

    prune_artifacts(work, "fn", {"aaa"})

    assert sorted(p.name for p in (work / "fn").iterdir()) == sorted(["aaa", fresh_tmp.name])
    assert (work / "other" / "ccc").is_dir()
    # In use, or too recent to be sure no preparation is about to link it.
    assert sorted(p.name for p in deps_root.iterdir()) == ["python-unused-new", "python-used"]

    prune_artifacts(work, "fn", set())
    prune_artifacts(work, "missing", set())
    assert sorted(p.name for p in (work / "fn").iterdir()) == [fresh_tmp.name]
    assert (deps_root / "python-used").is_dir()  # still linked by `other`


def test_prune_of_an_empty_work_root(tmp_path: Path) -> None:
    prune_artifacts(tmp_path / "nothing", "fn", set())


SECRET = "top-secret-outside-the-folder"


async def test_links_out_of_the_folder_are_refused_and_nothing_is_laid_out(
    tmp_path: Path,
) -> None:
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "outside").mkdir()
    source = python_function(tmp_path / "src")
    (source / "shadow").symlink_to("/etc/shadow")
    (source / "notes.txt").symlink_to("../secret.txt")
    (source / "data").symlink_to(tmp_path / "outside", target_is_directory=True)
    work = tmp_path / "work"
    with pytest.raises(UnsafeFolderError) as info:
        await prepare(source, work)
    message = info.value.message
    assert "shadow -> /etc/shadow (leaves the folder)" in message
    assert "notes.txt -> ../secret.txt (leaves the folder" in message
    assert "data -> " in message
    assert info.value.hint and "readlink -f" in info.value.hint
    assert not work.exists() or not list(work.rglob("*"))


async def test_requirements_linking_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(SECRET)
    source = write(tmp_path / "src", {"handler.py": HANDLER})
    (source / "requirements.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UnsafeFolderError, match=r"requirements\.txt"):
        await prepare(source, tmp_path / "work")


async def test_links_inside_are_kept_as_links(tmp_path: Path) -> None:
    source = python_function(tmp_path / "src")
    write(source, {"lib/util.py": "X = 1\n"})
    (source / "alias.py").symlink_to(source / "lib" / "util.py")
    (source / "libs").symlink_to("lib", target_is_directory=True)
    _version, folder, _cached, _lines = await prepare(source, tmp_path / "work")
    app = folder / "app"
    assert os.readlink(app / "alias.py") == "lib/util.py"
    assert os.readlink(app / "libs") == "lib"
    assert (app / "alias.py").read_text() == "X = 1\n"
