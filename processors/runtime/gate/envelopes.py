"""The repartition topic's records: what one partition of the gate asks of another.

Each record is a JSON object with a `kind` and the fields schemas/repartition-envelope.schema.json
names for it (docs/architecture.md says why each kind crosses the topic):

    rekey    an input record to the partition of its recipient's identity
    member   a document addressed to a linked BSUID, to the partition of its number
    slot     an accepted send that needs a messaging-limit slot, to the tenant's partition
    refund   a send the tenant refused: its pair budget and outcome, to its user's partition
    claim    a number links a BSUID: to the BSUID's partition, which follows it
    release  a BSUID followed another number: to the old number's, which lets it go
    adopt    a BSUID's history joins its number's user: to the number's partition
    return   a history that has no user to join: back to the BSUID's partition

Records written before the fields had names (one-letter keys, `k` for the kind, no kind for a
re-key) are read too, so that a topic written by an older worker is still understood.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.records import Output

REKEY, MEMBER, SLOT, REFUND = "rekey", "member", "slot", "refund"
CLAIM, RELEASE, ADOPT, RETURN = "claim", "release", "adopt", "return"
KINDS = (REKEY, MEMBER, SLOT, REFUND, CLAIM, RELEASE, ADOPT, RETURN)

Envelope = dict[str, Any]
# out, key, envelope: a record for the partition that owns key
Send = Callable[[list[Output], str, Envelope], None]


def rekey(contract: str, document: dict[str, Any]) -> Envelope:
    return {"kind": REKEY, "contract": contract, "document": document}


def member(head: str, contract: str, document: dict[str, Any]) -> Envelope:
    return {"kind": MEMBER, "head": head, "contract": contract, "document": document}


def slot(tenant: str, head: str, linked_number: str | None, document: dict[str, Any],
         monitored: tuple[str, ...], recategorized: str | None) -> Envelope:
    return {"kind": SLOT, "tenant": tenant, "head": head, "linked_number": linked_number,
            "document": document, "monitored": list(monitored),
            "recategorized": recategorized}


def refund(tenant: str, head: str, message_id: str, business_number: str,
           outcome: str) -> Envelope:
    return {"kind": REFUND, "tenant": tenant, "head": head, "message_id": message_id,
            "business_number": business_number, "outcome": outcome}


def claim(tenant: str, member_id: str, number: str, linked_at: float) -> Envelope:
    return {"kind": CLAIM, "tenant": tenant, "member": member_id, "number": number,
            "linked_at": linked_at}


def release(tenant: str, member_id: str, from_number: str, to_number: str) -> Envelope:
    return {"kind": RELEASE, "tenant": tenant, "member": member_id, "from_number": from_number,
            "to_number": to_number}


def adopt(tenant: str, member_id: str, number: str, state: Any) -> Envelope:
    return {"kind": ADOPT, "tenant": tenant, "member": member_id, "number": number,
            "state": state}


def returned(tenant: str, member_id: str, from_number: str, state: Any) -> Envelope:
    return {"kind": RETURN, "tenant": tenant, "member": member_id, "from_number": from_number,
            "state": state}


# The one-letter keys of records written before the fields had names, per kind.
_LEGACY: dict[str, dict[str, str]] = {
    REKEY: {"c": "contract", "d": "document"},
    MEMBER: {"h": "head", "c": "contract", "d": "document"},
    SLOT: {"t": "tenant", "h": "head", "l": "linked_number", "d": "document", "m": "monitored",
           "r": "recategorized"},
    REFUND: {"t": "tenant", "h": "head", "m": "message_id", "b": "business_number",
             "o": "outcome"},
    CLAIM: {"t": "tenant", "x": "member", "h": "number", "at": "linked_at"},
    RELEASE: {"t": "tenant", "x": "member", "from": "from_number", "to": "to_number"},
    ADOPT: {"t": "tenant", "x": "member", "h": "number", "s": "state"},
    RETURN: {"t": "tenant", "x": "member", "from": "from_number", "s": "state"},
}


def read(value: bytes | None) -> Envelope:
    """A repartition record's envelope, in today's field names."""
    envelope: Envelope = orjson.loads(value or b"{}")
    if "kind" in envelope:
        return envelope
    kind = envelope.pop("k", REKEY)
    names = _LEGACY[kind]
    return {"kind": kind, **{names.get(key, key): field for key, field in envelope.items()}}


class Repartition:
    """Sends envelopes to the partition that owns a key, through the repartition topic."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions

    def send(self, out: list[Output], key: str, envelope: Envelope) -> None:
        out.append(Output(self.topic, key.encode("utf-8"), orjson.dumps(envelope),
                          partition_for(key, self.partitions)))
