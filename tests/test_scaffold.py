"""plat init's scaffolding, the runtime templates, and the committed examples."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plat.errors import ConflictError, PlatError
from plat.ignore import IgnoreRules
from plat.manifest import load_manifest
from plat.runtimes import all_runtimes, detect_runtime, get_runtime, runtimes_root
from plat.scaffold import render_scaffold, scaffold
from tests.runtimes import ServerProcess

RUNTIMES = ("python", "node", "dockerfile")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# --- runtime.yaml --------------------------------------------------------------------------


def test_the_three_runtimes_exist() -> None:
    assert set(RUNTIMES) <= set(all_runtimes())


def test_python_runtime_yaml() -> None:
    rt = get_runtime("python")
    assert rt.base == "python:3.12-slim"
    assert rt.bootstrap is not None
    assert rt.bootstrap.image == "localhost/plat/python-base:bookworm"
    assert rt.bootstrap.packages == ("python3", "python3-pip", "ca-certificates")
    assert rt.detect == ("requirements.txt", "*.py")
    assert rt.handler == "handler.handle"
    assert rt.dependencies == ("requirements.txt",)
    assert rt.containerfile == "Containerfile.j2"
    assert rt.shim_dir is not None and (rt.shim_dir / "plat_shim.py").is_file()
    assert list(rt.scaffold) == ["plat.yaml", "handler.py", "requirements.txt", ".platignore"]


def test_node_runtime_yaml() -> None:
    rt = get_runtime("node")
    assert rt.base == "node:20-slim"
    assert rt.bootstrap is not None
    assert rt.bootstrap.image == "localhost/plat/node-base:bookworm"
    assert rt.bootstrap.packages == ("nodejs", "npm", "ca-certificates")
    assert rt.detect == ("package.json", "*.js")
    assert rt.handler == "handler.js"
    assert rt.dependencies == ("package.json", "package-lock.json")
    assert rt.shim_dir is not None and (rt.shim_dir / "plat-shim.cjs").is_file()
    assert list(rt.scaffold) == ["plat.yaml", "handler.js", "package.json", ".platignore"]


def test_dockerfile_runtime_yaml() -> None:
    rt = get_runtime("dockerfile")
    assert rt.base is None and rt.bootstrap is None
    assert rt.containerfile is None and rt.shim is None
    assert rt.detect == ("Dockerfile",)
    assert list(rt.scaffold) == ["plat.yaml", "Dockerfile", "server.py", ".platignore"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_referenced_template_exists(name: str) -> None:
    rt = get_runtime(name)
    for template in rt.scaffold.values():
        assert (rt.path / template).is_file(), template
    if rt.containerfile:
        assert (rt.path / rt.containerfile).is_file()


# --- scaffold ------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_scaffold_creates_a_valid_function(tmp_path: Path, runtime: str) -> None:
    target = tmp_path / "hello"
    created = scaffold(target, "hello", runtime)
    rt = get_runtime(runtime)
    assert created == [target / name for name in rt.scaffold]
    assert all(path.is_file() and path.read_text() for path in created)
    manifest = load_manifest(target)
    assert manifest.name == "hello"
    assert manifest.runtime == runtime
    assert manifest.handler == rt.handler
    assert manifest.auth == "basic"
    assert manifest.timeout == 30
    assert manifest.resources.memory == 256 * 1024**2
    assert manifest.resources.cpu == 0.5
    assert detect_runtime(target) == runtime


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_platignore_patterns(tmp_path: Path, runtime: str) -> None:
    scaffold(tmp_path / "f", "f", runtime)
    lines = (tmp_path / "f" / ".platignore").read_text().splitlines()
    for pattern in (".git/", "__pycache__/", "*.pyc", "node_modules/", ".venv/", ".DS_Store"):
        assert pattern in lines
    for pattern in ("*.log", "*.swp", "*.swo", ".#*", ".idea/", ".vscode/", ".mypy_cache/"):
        assert pattern in lines


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_scaffolded_platignore_leaves_out_the_usual_noise(tmp_path: Path, runtime: str) -> None:
    folder = tmp_path / "f"
    written = scaffold(folder, "f", runtime)
    for rel in (
        "dev.log",
        ".idea/workspace.xml",
        ".vscode/settings.json",
        ".handler.swo",
        ".ruff_cache/x",
        "htmlcov/index.html",
        ".coverage",
        ".venv/bin/python",
    ):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("noise")
    assert sorted(IgnoreRules(folder).files()) == sorted(p.relative_to(folder) for p in written)


def test_scaffolded_python_handler_compiles(tmp_path: Path) -> None:
    scaffold(tmp_path / "f", "f", "python")
    source = (tmp_path / "f" / "handler.py").read_text()
    compile(source, "handler.py", "exec")
    assert "def handle(event, context)" in source


def test_scaffolded_requirements_lists_no_packages(tmp_path: Path) -> None:
    scaffold(tmp_path / "f", "f", "python")
    lines = (tmp_path / "f" / "requirements.txt").read_text().splitlines()
    assert lines and all(not line.strip() or line.startswith("#") for line in lines)


def test_scaffolded_package_json(tmp_path: Path) -> None:
    scaffold(tmp_path / "my-fn", "my-fn", "node")
    data = json.loads((tmp_path / "my-fn" / "package.json").read_text())
    assert data["name"] == "my-fn"
    assert data["private"] is True
    assert data["dependencies"] == {}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_scaffolded_node_handler_parses(tmp_path: Path) -> None:
    scaffold(tmp_path / "f", "f", "node")
    subprocess.run(["node", "--check", str(tmp_path / "f" / "handler.js")], check=True)


def test_scaffolded_dockerfile_follows_the_contract(tmp_path: Path) -> None:
    scaffold(tmp_path / "f", "f", "dockerfile")
    text = (tmp_path / "f" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["python:3.12-slim"]
    bases = {rt.base for rt in all_runtimes().values() if rt.base}
    assert froms[0] in bases
    assert re.search(r"^USER 10001\b", text, re.M)
    assert "PORT=8080" in text
    assert not re.search(r"^RUN\b", text, re.M)  # nothing that could need the network
    compile((tmp_path / "f" / "server.py").read_text(), "server.py", "exec")


def test_dockerfile_scaffold_server_serves_http_1_1(tmp_path: Path) -> None:
    scaffold(tmp_path / "f", "f", "dockerfile")
    server = ServerProcess(
        [sys.executable, "server.py"], cwd=tmp_path / "f", logs=tmp_path / "logs"
    )
    try:
        server.wait_ready()
        resp = server.request("POST", "/", b'{"name": "Ada"}')
        assert resp.status == 200
        assert resp.json() == {"message": "Hello, Ada!"}
        assert server.request("GET", "/").json() == {"message": "Hello, world!"}
        assert server.request("POST", "/x", b"junk").json() == {"message": "Hello, world!"}
        conn = server.connection()
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            sock = conn.sock
            conn.request("GET", "/")
            conn.getresponse().read()
            assert conn.sock is sock  # keep-alive
        finally:
            conn.close()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=10) == 0
    finally:
        server.stop()


def test_existing_empty_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    assert scaffold(tmp_path / "f", "f", "python")


def test_non_empty_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not empty") as info:
        scaffold(target, "f", "python")
    assert info.value.hint
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_target_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(PlatError, match="not a folder"):
        scaffold(tmp_path / "f", "f", "python")


@pytest.mark.parametrize("name", ["Hello", "-x", "x-", "a_b", "", "a" * 64, "é"])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PlatError, match="not a valid function name") as info:
        scaffold(tmp_path / "f", name, "python")
    assert info.value.hint and "lowercase" in info.value.hint
    assert not (tmp_path / "f").exists()


def test_unknown_runtime_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlatError, match="unknown runtime 'cobol'") as info:
        scaffold(tmp_path / "f", "f", "cobol")
    assert info.value.hint and "python" in info.value.hint
    assert not (tmp_path / "f").exists()


def test_render_scaffold_uses_the_name(tmp_path: Path) -> None:
    files = render_scaffold(get_runtime("python"), "greeter")
    assert yaml.safe_load(files[Path("plat.yaml")])["name"] == "greeter"


# --- Containerfile templates --------------------------------------------------------------


def render_containerfile(runtime: str, deps: list[str], handler: str = "handler.handle") -> str:
    rt = get_runtime(runtime)
    assert rt.containerfile
    return rt.render(
        rt.containerfile,
        base=rt.base,
        function="hello",
        handler=handler,
        dependency_files=deps,
        has_dependencies=bool(deps),
    )


# The dependency install step (other RUN steps come with or without dependencies: the
# python shim's bytecode, node's /home/node_modules link).
INSTALL = "RUN set -e;"


def instructions(text: str) -> list[str]:
    """Instruction lines (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize(
    ("runtime", "deps"), [("python", ["requirements.txt"]), ("node", ["package.json"])]
)
def test_containerfile_layer_order(runtime: str, deps: list[str]) -> None:
    lines = instructions(render_containerfile(runtime, deps))
    keywords = [line.split()[0] for line in lines]
    assert keywords[0] == "FROM"
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(prefix))
        for prefix in ("FROM", "ENV PORT=8080", "COPY shim/", "COPY deps/", INSTALL, "COPY app/")
    ]
    assert order == sorted(order)
    # The image's settings come before the dependencies; the stack (built without
    # layers) runs one container, the install step.
    settings = lines[order[2] + 1 : order[3]]
    assert [line.split()[0] for line in settings] == [
        "WORKDIR",
        "EXPOSE",
        "CMD",
        "ENV",
    ]
    assert "WORKDIR /home/app" in settings
    assert any(line.startswith("ENV PLAT_HANDLER=") for line in settings)
    # After them only the code and the user, last (everything above the code is the
    # stack functions share): a code-only change is one commit.
    assert lines[order[-2] + 1 :] == ["COPY app/ /home/app/", "USER 10001:10001"]
    assert "RUN" not in keywords[order[-2] + 1 :]  # the code layer never runs anything
    assert keywords.count("RUN") == 1


@pytest.mark.parametrize(
    ("runtime", "deps", "step"),
    [
        ("python", [], "python3 -m compileall -q /opt/plat/shim"),
        ("python", ["requirements.txt"], "python3 -m compileall -q /opt/plat/shim;"),
        ("node", [], "ln -sfn /opt/plat/deps/node_modules /home/node_modules"),
        ("node", ["package.json"], "ln -sfn /opt/plat/deps/node_modules /home/node_modules;"),
    ],
)
def test_the_stack_runs_one_container_with_or_without_dependencies(
    runtime: str, deps: list[str], step: str
) -> None:
    lines = instructions(render_containerfile(runtime, deps))
    runs = [line for line in lines if line.startswith("RUN")]
    assert len(runs) == 1 and step in runs[0]
    assert lines.index(runs[0]) > lines.index("COPY shim/ /opt/plat/shim/")
    assert ("COPY deps/ /opt/plat/deps/" in lines) == bool(deps)


def test_python_containerfile_details() -> None:
    text = render_containerfile("python", ["requirements.txt"], handler="main.entry")
    lines = instructions(text)
    env = next(line for line in lines if line.startswith("ENV PORT"))
    for item in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"):
        assert item in env
    run = next(line for line in lines if line.startswith(INSTALL))
    assert "pip install --no-cache-dir --target /opt/plat/deps -r" in run
    assert "python3 -m pip" in run
    assert "PIP_CERT=/run/plat-ca/ca.crt" in run
    assert "SSL_CERT_FILE=/run/plat-ca/ca.crt" in run
    assert 'ENV PLAT_HANDLER="main.entry"' in lines
    assert 'CMD ["python3", "-P", "-S", "-c", "import plat_shim; plat_shim.main()"]' in lines
    # The shim is imported from its bytecode, made by the install step, before pip.
    assert "PYTHONPATH=/opt/plat/deps:/opt/plat/shim" in env
    assert run.index("python3 -m compileall -q /opt/plat/shim") < run.index("pip install")
    # the CA bundle is for the install step only, never part of the image config
    assert not any("plat-ca" in line for line in lines if not line.startswith("RUN"))


def test_node_containerfile_details() -> None:
    lines = instructions(render_containerfile("node", ["package.json"], handler="handler.js"))
    env = next(line for line in lines if line.startswith("ENV PORT"))
    assert "NODE_PATH=/opt/plat/deps/node_modules" in env
    run = next(line for line in lines if line.startswith(INSTALL))
    assert "npm install --omit=dev" in run
    assert "NODE_EXTRA_CA_CERTS=/run/plat-ca/ca.crt" in run
    assert "npm_config_cafile=/run/plat-ca/ca.crt" in run
    assert 'ENV PLAT_HANDLER="handler.js"' in lines
    assert 'CMD ["node", "/opt/plat/shim/plat-shim.cjs"]' in lines
    assert not any("plat-ca" in line for line in lines if not line.startswith("RUN"))
    locked = instructions(render_containerfile("node", ["package.json", "package-lock.json"]))
    assert "npm ci --omit=dev" in next(line for line in locked if line.startswith(INSTALL))


@pytest.mark.parametrize("runtime", ["python", "node"])
def test_containerfile_without_dependencies_has_no_install_step(runtime: str) -> None:
    lines = instructions(render_containerfile(runtime, []))
    assert not any(line.startswith((INSTALL, "COPY deps/")) for line in lines)
    assert "COPY app/ /home/app/" in lines


def test_python_install_step_skips_comment_only_requirements(tmp_path: Path) -> None:
    """The shell guard in the RUN step: comments and blank lines mean 'no packages'."""
    guard = "grep -qvE '^[[:space:]]*(#|$)'"
    assert guard in render_containerfile("python", ["requirements.txt"])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n   # indented comment\n")
    real = tmp_path / "real.txt"
    real.write_text("# comment\nhumanize==4.17.0\n")
    assert subprocess.run(f"{guard} {empty}", shell=True).returncode != 0
    assert subprocess.run(f"{guard} {real}", shell=True).returncode == 0


# --- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_example_validates(runtime: str) -> None:
    folder = EXAMPLES / f"hello-{runtime}"
    manifest = load_manifest(folder)
    assert manifest.runtime == runtime
    assert manifest.name == f"hello-{runtime}"
    assert detect_runtime(folder) == runtime
    assert (folder / ".platignore").is_file()


def test_python_example_pins_one_pure_python_package() -> None:
    lines = (EXAMPLES / "hello-python" / "requirements.txt").read_text().splitlines()
    packages = [line for line in lines if line.strip() and not line.startswith("#")]
    assert packages == ["humanize==4.17.0"]


def test_python_example_greets(tmp_path: Path) -> None:
    from tests.runtimes import PYTHON_SHIM

    env = {"PLAT_HANDLER": "handler.handle", "PYTHONDONTWRITEBYTECODE": "1"}
    if importlib.util.find_spec("humanize") is None:
        # humanize is installed in the image at build time; here a stand-in will do.
        stub = tmp_path / "stub"
        stub.mkdir()
        (stub / "humanize.py").write_text("def naturalsize(n):\n    return f'{n} Bytes'\n")
        env["PYTHONPATH"] = str(stub)
    server = ServerProcess(
        [sys.executable, str(PYTHON_SHIM)], cwd=EXAMPLES / "hello-python", logs=tmp_path, env=env
    )
    try:
        server.wait_ready()
        data = server.request("POST", "/", b'{"name": "Ada"}').json()
        assert data == {"message": "Hello, Ada!", "received": "15 Bytes"}
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_example_greets(tmp_path: Path) -> None:
    from tests.runtimes import NODE_SHIM

    server = ServerProcess(
        ["node", str(NODE_SHIM)],
        cwd=EXAMPLES / "hello-node",
        logs=tmp_path,
        env={"PLAT_HANDLER": "handler.js"},
    )
    try:
        server.wait_ready()
        data = server.request("POST", "/", b'{"name": "Ada"}').json()
        assert data["message"] == "Hello, Ada!"
    finally:
        server.stop()


def test_dockerfile_example_follows_the_contract() -> None:
    text = (EXAMPLES / "hello-dockerfile" / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.M) == ["python:3.12-slim"]
    assert re.search(r"^USER 10001\b", text, re.M)


def test_runtimes_root_is_the_checkout() -> None:
    assert (runtimes_root() / "python" / "runtime.yaml").is_file()
