"""`make bench QUICK=1` as a smoke test: every figure is produced (no speed is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from processors.runtime.engine.stream_thread import PHASES

pytestmark = pytest.mark.e2e

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "quick.json"


# The bench's own limit ends it, with its output, before pytest-timeout would kill the test.
@pytest.mark.timeout(660)
def test_quick_bench_produces_every_figure(bootstrap: str) -> None:
    result = subprocess.run([sys.executable, "-m", "tests.benchmarks.throughput", "--quick"],
                            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(RESULTS.read_text())
    assert set(summary["contenders"]) == {"ceiling", "gate", "gate_limits", "gate_at_least_once",
                                          "faust_plain", "quix"}
    for name, figures in summary["contenders"].items():
        assert figures["events_per_s"] > 0, name
    assert set(summary["ratios"]) == {"gate/ceiling", "gate/gate_at_least_once",
                                      "gate/gate_limits", "gate/faust_plain", "gate/quix"}
    for latency in (summary["latency"], summary["latency_limits"], summary["latency_floor"],
                    summary["latency_floor_at_1000"]):
        assert latency["samples"] > 0
        assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        assert latency["warm_up_max_ms"] > 0  # the warm-up's records were decided too
    for gate_latency in (summary["latency"], summary["latency_limits"]):
        # The worker's own batch phases after the warm-up: batches committed, each waited
        # for the broker's acknowledgements and the commit.
        assert gate_latency["batches"] > 0
        assert gate_latency["produce_ms"] > 0 and gate_latency["commit_ms"] > 0
        assert min(gate_latency[f"{phase}_ms"] for phase in PHASES) >= 0
    assert "a batch (" in result.stdout
    assert summary["gate_peak_rss_mb"] > 0
    assert summary["machine"]["cpus"] >= 1
    assert "gate" in result.stdout and "latency" in result.stdout
