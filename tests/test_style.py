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


def test_every_subpackage_ships_in_the_wheel() -> None:
    """pyproject lists packages by hand (templates/ is mapped in as packager.templates): a new stage folder left
    off it imports in the checkout and is missing from the wheel (packager.sizing once was; tests/e2e/test_wheel.py
    found it)."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"packager"} | {f"packager.{p.parent.name}" for p in (root / "packager").glob("*/__init__.py")}
    assert found <= listed, sorted(found - listed)
