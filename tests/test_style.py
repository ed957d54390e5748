"""The code stays easy to live in: every public function and class says what it does, modules stay short."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "packager"
MAX_MODULE_LINES = 300


def test_every_public_function_and_class_has_a_docstring() -> None:
    missing = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}"
        for path in ROOT.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
        and ast.get_docstring(node) is None
    ]
    assert not missing, missing


def test_modules_stay_under_the_size_limit() -> None:
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long
