"""Hostile input through the real worker: a short `make fuzz` (2,000 bad events).

Every bad event (not JSON, invalid UTF-8, empty and null values, wrong types, missing fields,
huge strings, deep nesting, over OUTBOUND_GATE_MAX_MESSAGE_BYTES, numbers in odd formats, bad
state events) must end as one dead letter with the expected reason or one decision with the
expected outcome, the good events between them decided, and the worker still running with no
crash in its log. The full run is `make fuzz` (100,000 bad events).
"""

from __future__ import annotations

import pytest

from tests.benchmarks import hostile

pytestmark = pytest.mark.e2e


def test_two_thousand_bad_events_each_end_as_expected(bootstrap: str) -> None:
    summary = hostile.run(bootstrap, events=2_000, seed=2_026, max_bytes=65_536, timeout=120)
    assert summary["bad"] == 2_000 and summary["good"] == 500
    assert summary["worker_alive"] and summary["log_problems"] == 0, summary
    assert summary["lost"] == 0 and summary["extra"] == 0 and summary["mismatched"] == 0, summary
    assert summary["dead_letter_bytes_differ"] == 0 and summary["produce_failed"] == 0, summary
    assert summary["ok"], summary
    # Every dead-letter reason and both outcomes were exercised.
    for outcome in ("dlq:empty", "dlq:too_large", "dlq:not_utf8", "dlq:not_json",
                    "dlq:schema_invalid", "accepted", "rejected:INVALID_RECIPIENT"):
        assert summary["outputs"].get(outcome), outcome
