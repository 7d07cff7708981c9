"""The A/B benchmark's reading of a worker's /metrics: how its route loop cut the work."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from processors.runtime.metrics import GateMetrics
from tests.benchmarks.throughput import paired, shape_of


def test_the_batch_shape_is_read_from_the_workers_metrics() -> None:
    registry = CollectorRegistry()
    metrics = GateMetrics(registry, tenant_cap=10)
    metrics.transactions.labels("committed").inc(3)
    metrics.transactions.labels("aborted").inc(1)
    metrics.repartitioned.inc(7)
    for records in (500, 500, 200):
        metrics.batch_records.observe(records)
    metrics.batch_phase.labels("process").observe(0.25)
    metrics.batch_phase.labels("process").observe(0.5)
    metrics.batch_phase.labels("commit").observe(0.125)

    shape = shape_of(generate_latest(registry).decode())

    assert shape["transactions"] == 3  # the committed ones only
    assert shape["rekeyed"] == 7
    assert shape["task_batches"] == 3
    assert shape["records_per_task_batch"] == 400
    assert shape["process_s"] == 0.75
    assert shape["commit_s"] == 0.125
    assert "records" not in shape


def test_runs_are_compared_pair_by_pair() -> None:
    # B's third run met a busy machine: the ratio of medians would move, the pairs' not much.
    a, b = [100, 90, 60, 110], [100, 100, 50, 100]

    compared = paired(a, b)

    assert compared == {"median": 1.05, "geometric_mean": 1.044, "a_faster": 2, "pairs": 4}
