"""The policy core and the offline check import nothing from Faust, Kafka or asyncio."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_kafka_or_asyncio() -> None:
    code = (
        "import sys\n"
        "import processors.policy, processors.enrich, processors.offline, processors.outputs\n"
        "import processors.decode, processors.cli.main\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'faust', 'aiokafka', 'kafka', 'asyncio', 'mode'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "", f"the core pulled in: {result.stdout.strip()}"
