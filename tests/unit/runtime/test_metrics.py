"""processors.runtime.metrics: batched histogram observations, with no broker."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram

from processors.runtime.metrics import LATENCY_BUCKETS, BatchedHistogram


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value
            for family in histogram.collect() for s in family.samples
            if not s.name.endswith("_created")}


def test_batched_histogram_says_what_observe_says() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=LATENCY_BUCKETS, registry=registry)
    batched = Histogram("batched_seconds", "b", buckets=LATENCY_BUCKETS, registry=registry)
    batch = BatchedHistogram(batched)
    # On, between, below and past the bounds; +Inf and NaN (NaN counts in no bucket).
    amounts = [0.0, -1.0, 0.0005, 0.00051, 0.001, 0.3, 2.5, 10.0, 10.5, 1e9, math.inf,
               math.nan, *(i / 997 for i in range(2000))]
    for amount in amounts:
        direct.observe(amount)
        batch.observe(amount)
    assert _samples(batched)[("batched_seconds_count", "")] == 0  # nothing until flush
    batch.flush()
    batch.flush()  # a second flush adds nothing
    expected = {(name.replace("direct", "batched"), le): value
                for (name, le), value in _samples(direct).items()}
    got = _samples(batched)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_sum"):  # nan in both; added up in another order otherwise
            assert math.isnan(got[key]) and math.isnan(value)
        else:
            assert got[key] == value, key


def test_batched_sum_is_the_sum() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=registry)
    batch = BatchedHistogram(histogram)
    for _ in range(3):
        for amount in (0.25, 0.002, 7.0):
            batch.observe(amount)
        batch.flush()
    samples = _samples(histogram)
    assert samples[("h_seconds_sum", "")] == pytest.approx(3 * 7.252)
    assert samples[("h_seconds_count", "")] == 9
    assert samples[("h_seconds_bucket", "0.0025")] == 3
