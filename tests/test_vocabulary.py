"""One place for each decision: a registered name (a quantization scheme, a builder, a deploy target) is spelled
as a string only where its registry lives (and in the runtime's own copy, which tests hold equal): every other
module looks it up, so a new entry needs no edit elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from packager.builders import BUILDERS
from packager.deploy.targets import TARGETS
from packager.quantize.schemes import SCHEMES

ROOT = Path(__file__).resolve().parent.parent
# vocabulary -> (its names, where they may be spelled)
VOCABULARIES = {
    "quantization schemes": (
        SCHEMES,
        # the runtime keeps its own list; sizes.py's "fp8" is vLLM's KV-cache dtype, another vocabulary
        ("packager/quantize/schemes.py", "packager/runtime/", "packager/sizes.py"),
    ),
    # each builder's module names itself and its command; quiet.py names the docker SDK's logger
    "builders": (BUILDERS, ("packager/builders/", "packager/cli/quiet.py")),
    "deploy targets": (TARGETS, ("packager/deploy/targets.py",)),
}


def spelled(path: Path, names: set[str], root: Path = ROOT) -> list[str]:
    """`path:line name` for each string constant equal to one of `names`, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    ]


def misplaced(names: set[str], allowed: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """Every spelling of `names` in root/packager outside the `allowed` paths."""
    found = []
    for path in sorted((root / "packager").rglob("*.py")):
        if not str(path.relative_to(root)).startswith(allowed):
            found += spelled(path, names, root)
    return found


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
def test_registered_names_are_spelled_only_in_their_registry(vocabulary) -> None:
    names, allowed = VOCABULARIES[vocabulary]
    assert misplaced(set(names), allowed) == []


def test_a_name_spelled_elsewhere_is_found(tmp_path) -> None:
    (tmp_path / "packager").mkdir()
    (tmp_path / "packager" / "x.py").write_text('"""w8a8 in a docstring is fine."""\nif s == "w8a8":\n    pass\n')
    assert misplaced({"w8a8"}, ("packager/quantize/",), tmp_path) == ["packager/x.py:2 w8a8"]
