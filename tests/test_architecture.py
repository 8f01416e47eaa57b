"""The shape of the code: no import cycles, modules of a readable size, the HTTP
wing independent of plat, and an architecture doc that names only what exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "plat"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every plat module ``path`` imports, wherever the import is (a function's body
    or a TYPE_CHECKING block count too: a cycle hidden there is still a cycle)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(r for a in node.names if (r := _resolve(a.name)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                resolved = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                if resolved:
                    out.add(resolved)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_plat() -> None:
    graph = {name: _imports(path) - {name} for name, path in MODULES.items()}
    # A package's __init__ importing its own modules is how packages re-export.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_the_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_http_wing_knows_nothing_of_plat() -> None:
    wing = "plat.daemon.http"
    leaks = {
        name: sorted(m for m in _imports(path) if not m.startswith(wing))
        for name, path in MODULES.items()
        if name.startswith(wing)
    }
    assert {name: deps for name, deps in leaks.items() if deps} == {}


def test_every_module_the_architecture_doc_names_exists() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(plat/[\w/]+(?:\.py|/))`", text))
    assert named, "docs/architecture.md names no module"
    assert sorted(p for p in named if not (REPO / p).exists()) == []
