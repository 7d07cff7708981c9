"""The pure core (every module of processors.core) and the offline check import nothing from
Faust, Kafka or asyncio, and neither does the CLI until a command needs Kafka."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_kafka_or_asyncio() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import processors.core\n"
        "for module in pkgutil.walk_packages(processors.core.__path__, 'processors.core.'):\n"
        "    importlib.import_module(module.name)\n"
        "import processors.tools.offline, processors.cli.main\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'faust', 'aiokafka', 'kafka', 'asyncio', 'mode'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "", f"the core pulled in: {result.stdout.strip()}"
