"""Every library the server (processors/) and the client (clients/python) import is declared in
its own pyproject.toml: an import that only works because something else pulled the library in
breaks the day that something changes (aiohttp was imported and not declared)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported(package: Path) -> set[str]:
    """Top-level names of the absolute imports in a package's sources."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return {normal(re.split(r"[\s<>=!~;\[@]", spec, maxsplit=1)[0])
            for spec in project.get("dependencies", [])}


@pytest.mark.parametrize(("package", "pyproject"), [
    (REPO / "processors", REPO / "pyproject.toml"),
    (REPO / "clients/python/outbound_gate_client", REPO / "clients/python/pyproject.toml"),
], ids=["server", "client"])
def test_every_imported_library_is_declared(package: Path, pyproject: Path) -> None:
    own = package.name
    distributions = packages_distributions()
    undeclared = {}
    for name in imported(package) - set(sys.stdlib_module_names) - {own, "__future__"}:
        sources = {normal(d) for d in distributions.get(name, [])}
        assert sources, f"{name} is imported by {own} and not installed"
        if not sources & declared(pyproject):
            undeclared[name] = sorted(sources)
    assert not undeclared, f"imported by {own}, not in {pyproject.name}: {undeclared}"
