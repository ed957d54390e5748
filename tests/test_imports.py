"""The package's import graph has no cycles: between modules, or between stage folders (function-level imports
included, since an import inside a function is a dependency all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "packager"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every packager module `path` imports, anywhere in the file (TYPE_CHECKING blocks excepted)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports do not run
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name in modules}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> packager modules it imports; the standalone runtime package is left out (it imports nothing)."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def stage(module: str) -> str:
    """packager.merge.stream -> packager.merge; top-level modules are their own stage."""
    return ".".join(module.split(".")[:2])


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = folders.setdefault(stage(module), set())
        edges.update(stage(t) for t in targets if stage(t) != stage(module))
    return folders


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycle_between_modules() -> None:
    graph = import_graph()
    assert len(graph) > 30
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_cycle_between_stage_folders() -> None:
    graph = folder_graph(import_graph())
    assert {"packager.resolve", "packager.merge", "packager.image", "packager.builders", "packager.cli"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("where", ["top", "function"])
def test_an_added_cycle_is_found(tmp_path: Path, where: str) -> None:
    package = tmp_path / "packager"
    (package / "stage").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stage" / "__init__.py").write_text("")
    (package / "stage" / "a.py").write_text("from packager.top import thing\n")
    body = "from packager.stage.a import x\n"
    (package / "top.py").write_text(body if where == "top" else f"def f():\n    {body}")
    graph = import_graph(package)
    assert find_cycle(graph) == ["packager.stage.a", "packager.top", "packager.stage.a"]
    assert find_cycle(folder_graph(graph)) is not None
