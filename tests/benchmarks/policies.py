"""The policy of the runs whose expected decisions are computed in advance (`make chaos`,
`make fuzz`): the packaged policy with PAIR_RATE_LIMITED in monitor mode.

Why: the pair rate limit (45 sends, one more every 6 s, per tenant, business number and user)
is the only rule that depends on *when* a message is decided. The live worker decides at the
wall clock when it reads the record; the offline check (processors.tools.offline), against which
`make chaos` audits the live decisions, decides at each message's created_at, and the workload
dates a whole run's messages alike; `make fuzz` expects each record's outcome from the record
alone. So whether the 46th send to a busy user is refused depends on the stream's pace, a
crash or a broker restart, and the two sides would differ by timing, not by a fault. In monitor
mode the rule is still evaluated on both sides (and counted as monitored) and accepted sends
still use the budget; it only no longer decides. Every other rule, and the linking of
identities, is compared as enforced. The rule's own behaviour is covered by the unit tests
(tests/unit/core/test_policy.py, tests/unit/runtime/test_routing_links.py) and by `make bench`,
which runs the packaged policy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from processors.core.policy import PolicySet, load_policy
from processors.core.policy.document import parse_policy

TIMING_DEPENDENT = "PAIR_RATE_LIMITED"


def timing_free_document() -> dict[str, object]:
    """The packaged policy document with the timing-dependent rule in monitor mode."""
    document = copy.deepcopy(dict(load_policy(None).document))
    rules = document["rules"]
    assert isinstance(rules, dict)
    rules[TIMING_DEPENDENT] = {**rules[TIMING_DEPENDENT], "mode": "monitor"}
    document["id"] = f"{document['id']}-pair-rate-monitored"
    return document


def timing_free_policies() -> PolicySet:
    """For the offline side (OfflineCheck(policies, ...))."""
    return parse_policy(timing_free_document())


def write_timing_free_policy(directory: Path) -> Path:
    """The same document as a file, for the workers' OUTBOUND_GATE_POLICY_FILE (or the offline
    check's --policy)."""
    path = directory / "policy-pair-rate-monitored.json"
    path.write_text(json.dumps(timing_free_document(), indent=2) + "\n", encoding="utf-8")
    return path
