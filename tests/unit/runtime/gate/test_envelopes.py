"""The repartition topic's envelopes: each kind as the gate writes it follows
schemas/repartition-envelope.schema.json, and a record written with the one-letter keys of
earlier versions is read as today's."""

from __future__ import annotations

import orjson
import pytest

from processors.core import contracts
from processors.runtime.gate import envelopes

NUMBER, OTHER, BSUID = "+5511912345678", "+5511912345679", "BR.1001"
STATE = [[1000.0], [], [], [], [], [], None]
DOCUMENT = {"tenant_id": "acme", "sender": NUMBER, "timestamp": "2026-12-01T12:00:00Z"}
MESSAGE = {"message_id": "m-1", "tenant_id": "acme", "recipient": BSUID}

# kind -> (today's envelope, the same written with one-letter keys)
CASES = {
    envelopes.REKEY: (envelopes.rekey("inbound_message", DOCUMENT),
                      {"c": "inbound_message", "d": DOCUMENT}),
    envelopes.MEMBER: (envelopes.member(NUMBER, "outbound_message", MESSAGE),
                       {"k": "member", "h": NUMBER, "c": "outbound_message", "d": MESSAGE}),
    envelopes.SLOT: (envelopes.slot("acme", NUMBER, NUMBER, MESSAGE, ("PAIR_RATE_LIMITED",),
                                    "UTILITY"),
                     {"k": "slot", "t": "acme", "h": NUMBER, "l": NUMBER, "d": MESSAGE,
                      "m": ["PAIR_RATE_LIMITED"], "r": "UTILITY"}),
    envelopes.REFUND: (envelopes.refund("acme", NUMBER, "m-1", "", "MESSAGING_LIMIT_REACHED"),
                       {"k": "refund", "t": "acme", "h": NUMBER, "m": "m-1", "b": "",
                        "o": "MESSAGING_LIMIT_REACHED"}),
    envelopes.CLAIM: (envelopes.claim("acme", BSUID, NUMBER, 1000.0),
                      {"k": "claim", "t": "acme", "x": BSUID, "h": NUMBER, "at": 1000.0}),
    envelopes.RELEASE: (envelopes.release("acme", BSUID, NUMBER, OTHER),
                        {"k": "release", "t": "acme", "x": BSUID, "from": NUMBER,
                         "to": OTHER}),
    envelopes.ADOPT: (envelopes.adopt("acme", BSUID, NUMBER, STATE),
                      {"k": "adopt", "t": "acme", "x": BSUID, "h": NUMBER, "s": STATE}),
    envelopes.RETURN: (envelopes.returned("acme", BSUID, NUMBER, STATE),
                       {"k": "return", "t": "acme", "x": BSUID, "from": NUMBER, "s": STATE}),
}


def test_every_kind_has_a_case() -> None:
    assert set(CASES) == set(envelopes.KINDS)


@pytest.mark.parametrize("kind", envelopes.KINDS)
def test_each_kind_follows_the_schema_and_reads_back(kind: str) -> None:
    today, legacy = CASES[kind]
    assert today["kind"] == kind
    assert contracts.first_error("repartition_envelope", today) is None
    assert envelopes.read(orjson.dumps(today)) == today
    assert contracts.first_error("repartition_envelope", legacy) is not None
    assert envelopes.read(orjson.dumps(legacy)) == today


def test_a_wrong_envelope_is_refused_by_the_schema() -> None:
    claim = dict(CASES[envelopes.CLAIM][0])
    del claim["linked_at"]
    assert contracts.first_error("repartition_envelope", claim) is not None
    assert contracts.first_error("repartition_envelope", {**claim, "kind": "teleport"})
