"""The package's import graph reads in one direction: no cycles between modules or between stage folders
(function-level and type-only imports included: each is a dependency all the same), and no stage imports one
ranked after it in STAGES, the order the README's "How the code is laid out" tells."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "packager"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Each line one layer: a stage may import its own layer and those above it, never one below. Vocabulary first
# (the runtime, copied into images alone, imports nothing of packager), then readers, measuring and making, the
# plan's types, resolving and sizing, the steps that consume a plan, the planner (which reads every step's
# registry), the steps that run, the entry points.
STAGES = (
    ("runtime",),
    ("packager", "errors", "dtypes", "model_files", "adapter_kinds", "tasks", "choices", "progress", "registry"),
    ("io",),
    ("formats", "architecture"),
    ("accuracy",),
    ("quantize",),
    ("artefact",),
    ("plan", "lock", "bom", "sizes", "deployment"),
    ("resolve", "sizing"),
    ("image", "builders", "deploy", "signing"),
    ("planning",),
    ("merge", "model_image"),
    ("package", "demo"),
    ("cli",),
)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every packager module `path` imports, anywhere in the file (TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name in modules}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> packager modules it imports by absolute name (the runtime's own relative imports stay inside it)."""
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


def rank(stage_name: str) -> int:
    """The layer of a stage (packager.merge -> its line in STAGES)."""
    short = stage_name.removeprefix("packager.") if stage_name != "packager" else "packager"
    return next(i for i, layer in enumerate(STAGES) if short in layer)


def later_imports(graph: dict[str, set[str]]) -> list[str]:
    """`module -> target` for every import of a stage ranked after the importer's."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if rank(stage(target)) > rank(stage(module))
    )


def test_every_stage_has_its_place() -> None:
    stages = {stage(module) for module in import_graph()}
    assert all(any(s.removeprefix("packager.") in layer or s == "packager" for layer in STAGES) for s in stages)
    assert len({name for layer in STAGES for name in layer}) == sum(len(layer) for layer in STAGES)


def test_no_stage_imports_a_later_one() -> None:
    assert later_imports(import_graph()) == []


def test_no_cycle_between_modules() -> None:
    graph = import_graph()
    assert len(graph) > 30
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_cycle_between_stage_folders() -> None:
    graph = folder_graph(import_graph())
    assert {"packager.resolve", "packager.merge", "packager.image", "packager.builders", "packager.cli"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_a_backward_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "packager"
    for folder in ("merge", "resolve"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "merge" / "run.py").write_text("")
    (package / "resolve" / "plan.py").write_text("if TYPE_CHECKING:\n    from packager.merge.run import x\n")
    assert later_imports(import_graph(package)) == ["packager.resolve.plan -> packager.merge.run"]


@pytest.mark.parametrize("where", ["top", "function", "type-only"])
def test_an_added_cycle_is_found(tmp_path: Path, where: str) -> None:
    package = tmp_path / "packager"
    (package / "stage").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stage" / "__init__.py").write_text("")
    (package / "stage" / "a.py").write_text("from packager.top import thing\n")
    body = "from packager.stage.a import x\n"
    wrapped = {"top": body, "function": f"def f():\n    {body}", "type-only": f"if TYPE_CHECKING:\n    {body}"}
    (package / "top.py").write_text(wrapped[where])
    graph = import_graph(package)
    assert find_cycle(graph) == ["packager.stage.a", "packager.top", "packager.stage.a"]
    assert find_cycle(folder_graph(graph)) is not None
