"""What the benchmark contenders share: the command line, the input topics, and the gate's rules.

The rules are the gate's, applied through its pure core (processors.core.decode,
processors.core.policy, processors.core.outputs) exactly as processors/runtime/gate/processor.py and
processors/runtime/catalog.py apply them:

- outbound message: decode; catalog entry at the clock; enrich; drop a message_id already
  decided for that recipient (the gate's idempotency); decide at time.time(); one accepted or
  rejection record keyed tenant:e164 (tenant:BSUID for a BSUID recipient); remember the
  message_id and, for an accepted send, use the pair's rate budget; prune, store.
- state event: decode; the recipient must be a valid number or business-scoped user ID (BSUID;
  else dead letter); reduce, prune, store (an empty state is deleted). State is keyed
  tenant:<identity>, the E.164 number or the BSUID the event names, as the gate keys it.

Linking is simplified here (the peers are a throughput comparison, not a second gate): an
event that names a number and a BSUID records the link in the number's state, as the gate's
head record does, but nothing more: no hop to the BSUID's partition, no history moved, and a
send sees the state of the identity it is addressed to only, not the combined state of the
user's identities. So the peers do less work per linked user than the gate (which forwards
records addressed to a linked BSUID through its repartition topic), and may accept a send the
gate refuses because of state recorded under the user's other identity. A state event that names
a BSUID alone is state for that BSUID, as in the gate.
- catalog entry: decode and merge into the history (a null value deletes the key's entry).
- anything undecodable: one dead-letter record (keyed by the input key) to the output topic.

One difference from the gate: the gate writes to three topics (accepted, rejected, dead letter),
the contenders to the one --output topic, so that the harness counts one place.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson
from kafka import KafkaConsumer

from processors.core import outputs
from processors.core.decode import DecodeError, decode
from processors.core.enrich import parse_recipient
from processors.core.policy import EMPTY, PolicySet, RecipientState, decide, enrich, load_policy
from processors.core.policy import identity as ids
from processors.core.policy import state as st
from processors.core.policy import templates as tpl
from processors.core.timeutil import parse_rfc3339

OUTBOUND = "outbound_message"
TEMPLATE = "template_entry"
# Topic suffix -> contract name, in the order the harness lists them.
SUFFIXES = {
    "outbound": OUTBOUND,
    "statuses": "delivery_status",
    "inbound": "inbound_message",
    "preferences": "user_preference",
    "templates": TEMPLATE,
}
DEFAULT_PARTITIONS = 8
DEDUP_SECONDS = 3600.0  # the gate's OUTBOUND_GATE_DEDUP_SECONDS default

StateOf = Callable[[str], RecipientState]


@dataclass(frozen=True, slots=True)
class PeerArgs:
    bootstrap: str
    prefix: str
    group: str
    output: str
    partitions: int | None

    def topics(self) -> dict[str, str]:
        """Input topic name -> contract."""
        return {f"{self.prefix}.{suffix}": contract for suffix, contract in SUFFIXES.items()}


def parse_args(description: str, argv: list[str] | None = None) -> PeerArgs:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", required=True, help="input topics are <prefix>.outbound ...")
    parser.add_argument("--group", required=True, help="consumer group (and app id)")
    parser.add_argument("--output", required=True, help="topic every output record goes to")
    parser.add_argument("--partitions", type=int, default=None,
                        help="input partition count (default: read from the broker, else 8)")
    args = parser.parse_args(argv)
    return PeerArgs(args.bootstrap, args.prefix, args.group, args.output, args.partitions)


def partition_count(bootstrap: str, topic: str, timeout: float = 10.0) -> int:
    """Partitions of an existing topic (the harness creates them all alike), else 8."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                return len(partitions)
            time.sleep(0.1)  # waiting for metadata, not for the system under test
        return DEFAULT_PARTITIONS
    finally:
        consumer.close()


def ready() -> None:
    print("READY", flush=True)


def stop_flag() -> threading.Event:
    """Set on SIGTERM or SIGINT: a confluent-kafka peer's loop ends there and cleans up."""
    flag = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        flag.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return flag


def ready_on_assign() -> Callable[[Any, list[Any]], None]:
    """An on_assign callback that prints READY the first time partitions are assigned."""
    announced = threading.Event()

    def on_assign(_consumer: Any, partitions: list[Any]) -> None:
        if partitions and not announced.is_set():
            announced.set()
            ready()

    return on_assign


@dataclass(frozen=True, slots=True)
class Decided:
    """One output record, and the recipient state to store after it (None: leave it alone)."""

    key: bytes
    value: bytes
    state_key: str | None
    state: RecipientState | None


class Rules:
    def __init__(self, policies: PolicySet | None = None,
                 dedup_seconds: float = DEDUP_SECONDS) -> None:
        self.policies = policies or load_policy()
        self.dedup_seconds = dedup_seconds

    def retention(self, tenant_id: str) -> st.Retention:
        parameters = self.policies.for_tenant(tenant_id).parameters
        return st.Retention(parameters.service_window_seconds,
                            parameters.marketing_cooldown_seconds, self.dedup_seconds,
                            parameters.marketing_experiment_hold_seconds)

    def outbound(self, message: dict[str, Any], catalog: Mapping[str, Any], state_of: StateOf,
                 now: float) -> Decided | None:
        """The decision record for a decoded message; None for an already decided message_id."""
        tenant = message["tenant_id"]
        entry = None
        if message["kind"] == "template":
            template = message["template"]
            history = catalog.get(tpl.catalog_key(tenant, template["name"], template["language"]))
            entry = tpl.entry_at(tuple(history), now) if history else None
        enrichment = enrich(message, entry)
        identity = enrichment.recipient.identity  # the E.164 number or the BSUID
        # An invalid recipient: decided, no state.
        key = st.state_key(tenant, identity) if identity else None
        state = state_of(key) if key else EMPTY
        if key and st.already_decided(state, message["message_id"]):
            return None
        policy = self.policies.for_tenant(tenant)
        decision = decide(message, enrichment, state, entry, policy, now)
        build = outputs.accepted if decision.accepted else outputs.rejection
        record = build(message, enrichment, decision, now)
        after = None
        if key:
            after = st.with_decided(state, message["message_id"], now)
            if decision.accepted:  # an accepted send uses the pair's budget, as in the gate
                after = st.with_send(after, message.get("business_number") or "", now,
                                     policy.parameters.pair_rate_interval_seconds)
            after = st.prune(after, now, self.retention(tenant))
        return Decided(outputs.output_key(message, enrichment).encode("utf-8"),
                       orjson.dumps(record), key, after)

    def record(self, contract: str, value: bytes | None, catalog: Mapping[str, Any],
               state_of: StateOf, now: float) -> tuple[Decided | None, RecipientState | None]:
        """One record of a recipient topic: (its decision record, if it makes one; the state
        to store, if any). Raises DecodeError for a record to dead-letter."""
        document = decode(contract, value)
        if contract != OUTBOUND:
            return None, self.state_event(contract, document, state_of, now)[1]
        decided = self.outbound(document, catalog, state_of, now)
        return decided, None if decided is None else decided.state

    def state_event(self, contract: str, document: dict[str, Any], state_of: StateOf,
                    now: float) -> tuple[str, RecipientState]:
        """(state key, new state) for a decoded state event; DecodeError for a recipient that
        is neither a valid number nor a valid BSUID. A number's event that also names the
        user's BSUID records the link in the number's state (simplified: see the docstring)."""
        reducer, field = st.REDUCERS[contract]
        identity = parse_recipient(document[field]).identity
        if identity is None:
            raise DecodeError("schema_invalid", f"{field} is not a valid phone number or "
                              "business-scoped user ID")
        key = st.state_key(document["tenant_id"], identity)
        state = reducer(state_of(key), document)
        for kind, member in ids.named_links(document, document[field]):
            state, _, _ = ids.link(state, kind, member, parse_rfc3339(document["timestamp"]))
        return key, st.prune(state, now, self.retention(document["tenant_id"]))


def apply_template(catalog: MutableMapping[str, Any], key: bytes | None,
                   value: bytes | None) -> None:
    """A catalog record into a catalog mapping (values: lists of entries, oldest first)."""
    if value is None:  # tombstone: deletes the entry its key names
        if key is None:
            raise DecodeError("empty", "a catalog tombstone without a key")
        catalog.pop(key.decode("utf-8", "replace"), None)
        return
    entry = decode(TEMPLATE, value)
    name = tpl.catalog_key(entry["tenant_id"], entry["name"], entry["language"])
    catalog[name] = list(tpl.merge(tuple(catalog.get(name) or ()), entry))


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                error: DecodeError) -> bytes:
    return orjson.dumps(outputs.dead_letter(topic, partition, offset, key, value, error.reason,
                                            str(error), time.time()))
