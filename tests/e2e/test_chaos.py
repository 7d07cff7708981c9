"""Exactly once through crashes: the short variant of `make chaos` on real processes.

20,000 events; two workers; one SIGKILLed twice and started again, one stopped with SIGTERM and
started again, the local broker SIGKILLed and started again (skipped against an external
cluster), all while outbound records stream in. The audit (a read_committed consumer against the
offline check over the same records) must find nothing lost, nothing duplicated, nothing wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e


# The run's own limit ends it, with its output, before pytest-timeout would kill the test.
@pytest.mark.timeout(660)
def test_short_chaos_run_loses_nothing_and_repeats_nothing(bootstrap: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.chaos", "--short"], cwd=REPO,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHON": sys.executable})
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no summary line (exit {result.returncode}):\n{result.stderr[-3000:]}"
    summary = json.loads(lines[-1])
    assert summary["outputs"] >= summary["inputs"] > 18_000, summary
    assert (summary["lost"], summary["duplicated"], summary["wrong"],
            summary["unexpected_outputs"]) == (0, 0, 0, 0), summary
    assert summary["crash_traces"] == [], summary
    kills = [fault for fault in summary["faults"] if fault.startswith("SIGKILL w")]
    assert len(kills) == 2 and any(f.startswith("SIGTERM w") for f in summary["faults"])
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        assert any(f.startswith("broker SIGKILL") for f in summary["faults"]), summary
    assert result.returncode == 0, result.stderr[-3000:]
