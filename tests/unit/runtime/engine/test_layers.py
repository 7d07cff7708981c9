"""The layer rule: the engine (processors.runtime.engine) runs a Processor and imports nothing
of the gate: not its processor, not its core, not the app's views and feeds. What it may use
besides itself is listed here, each for a reason."""

from __future__ import annotations

import ast
from pathlib import Path

import processors.runtime.engine as engine

ENGINE = Path(engine.__file__).parent
ALLOWED = {
    "processors.runtime.kafka_clients",  # the one Kafka client factory
    "processors.settings",  # the worker's settings
    "processors.core.frozen",  # a generic helper for fast frozen dataclasses (Record, Output)
}


def imports_of(path: Path) -> set[str]:
    """Every processors.* module a file imports (from-imports name their modules)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # "from processors.runtime import kafka_clients" names modules too
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if node.module in ("processors", "processors.runtime",
                                            "processors.runtime.engine"))
    return {name for name in found if name.startswith("processors")}


def test_the_engine_imports_nothing_of_the_gate() -> None:
    files = sorted(ENGINE.glob("*.py"))
    assert len(files) > 5
    for path in files:
        outside = {name for name in imports_of(path)
                   if not name.startswith("processors.runtime.engine")
                   and name not in ALLOWED and name not in ("processors", "processors.runtime")}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_check_finds_a_gate_import(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from processors.runtime.gate.processor import GateProcessor\n"
                     "from processors.runtime import catalog\n")
    assert imports_of(leaky) == {"processors.runtime.gate.processor", "processors.runtime",
                                 "processors.runtime.catalog"}
