"""The JSON Schemas ship with the package: what a wheel carries is schemas/, with no drift.

schemas/ at the repository root is the source of truth; processors/schemas is a symlink to it,
and pyproject.toml's package-data copies the files it points at into the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from processors.core import contracts

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "schemas"
LINK = ROOT / "processors" / "schemas"


def schema_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.schema.json"))}


def test_the_packaged_schemas_are_a_link_to_schemas() -> None:
    assert LINK.is_symlink(), "processors/schemas must stay a symlink to ../schemas, not a copy"
    assert os.readlink(LINK) == "../schemas"
    assert LINK.resolve() == SOURCE.resolve()
    assert set(contracts.SCHEMA_FILES.values()) <= set(schema_files(SOURCE))


def test_schemas_dir_finds_the_packaged_copy_unless_overridden(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OUTBOUND_GATE_SCHEMAS_DIR", raising=False)
    assert contracts.schemas_dir() == LINK
    monkeypatch.setenv("OUTBOUND_GATE_SCHEMAS_DIR", str(tmp_path))
    assert contracts.schemas_dir() == tmp_path


def test_a_build_carries_exactly_schemas(tmp_path: Path) -> None:
    # setuptools' build_py, as a wheel build runs it, on a copy of the project (so that nothing
    # is written into the checkout): the package data must be the files of schemas/.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "processors", project / "processors", symlinks=True, ignore=ignore)
    shutil.copytree(SOURCE, project / "schemas", ignore=ignore)
    build = tmp_path / "build"
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "--quiet",
         "build_py", "--build-lib", str(build)],
        cwd=project, check=True, capture_output=True)
    packaged = build / "processors" / "schemas"
    assert packaged.is_dir() and not packaged.is_symlink()
    assert schema_files(packaged) == schema_files(SOURCE)
    # and the check API's OpenAPI document, which the worker serves
    assert (packaged / "openapi.json").read_bytes() == (SOURCE / "openapi.json").read_bytes()
    assert sorted(path.name for path in packaged.iterdir()) == sorted(
        [*schema_files(SOURCE), "openapi.json"])
