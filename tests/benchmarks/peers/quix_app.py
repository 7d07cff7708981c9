"""Contender "quix_app": the gate's rules as a Quix Streams 3 Application, as Quix documents apps.

    python -m tests.benchmarks.peers.quix_app --bootstrap 127.0.0.1:9092 --prefix P --group G \
        --output OUT

The four recipient topics (outbound, statuses, inbound, preferences) are read as one
StreamingDataFrame (`sdf.concat`), so one stateful `apply` sees every record of a recipient and
keeps that recipient's state through Quix's `State` (RocksDB, changelog-backed, keyed by the
message key "tenant:<identity>", the E.164 number or the BSUID). Concatenation is needed: Quix
keeps a store per stream, so four separate dataframes would each have their own, unshared,
state. Concatenating different topics also turns on Quix's timestamp-aligned consumption, as
Quix documents for concat. A record cannot read another key's state, so a number's state and
its linked BSUID's cannot be combined here: linking is simplified (common.py says how).

The template catalog is a plain dict in the process, fed by a stateless dataframe on the
templates topic. Quix state is per partition and per message key: the store of partition p holds
only the keys of partition p, and a recipient's record cannot read another key's state, so the
catalog (needed by every partition, keyed by template) cannot live there. Quix has no
GlobalTable; the dict is right for one process reading every partition (as in the benchmark);
with several processes each would see only the catalog partitions it is assigned.

Each outbound message gives one decision record and each undecodable record one dead letter,
produced with `sdf.to_topic` (the record is encoded by the gate's pure core; the output topic's
serializer passes those bytes through). Rules: see common.py. READY is printed when Quix assigns
partitions; SIGTERM/SIGINT stop Quix's run loop and the process exits 0.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from typing import Any, NamedTuple

from confluent_kafka import TopicPartition
from quixstreams import Application, State, message_context
from quixstreams.models import SerializationContext
from quixstreams.models.serializers import Serializer

from processors.core.decode import DecodeError
from processors.core.policy import RecipientState
from processors.core.policy import state as st
from tests.benchmarks.peers.common import (
    TEMPLATE,
    PeerArgs,
    Rules,
    apply_template,
    dead_letter,
    parse_args,
    ready,
)

STATE = "recipient"  # the one state key under each message key


class Out(NamedTuple):
    key: bytes | None
    value: bytes


class Encoded(Serializer):
    """Values already encoded by the pure core: produce their bytes as they are."""

    def __call__(self, value: Out, ctx: SerializationContext) -> bytes:
        return value.value


class PeerApplication(Application):
    """Application that says READY once partitions are first assigned."""

    announced = False

    def _on_assign(self, _: Any, topic_partitions: list[TopicPartition]) -> None:
        super()._on_assign(_, topic_partitions)
        if topic_partitions and not self.announced:
            self.announced = True
            ready()


def build(app: Application, args: PeerArgs, rules: Rules) -> None:
    contracts = args.topics()
    topics = {name: app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
              for name in contracts}
    output = app.topic(args.output, key_serializer="bytes", value_serializer=Encoded())
    catalog: dict[str, Any] = {}

    def letter(key: bytes | None, value: bytes | None, error: DecodeError) -> Out:
        context = message_context()
        return Out(key, dead_letter(context.topic, context.partition, context.offset, key, value,
                                    error))

    def recipient_record(value: bytes | None, key: bytes | None, timestamp: int, headers: Any,
                         state: State[str, Any]) -> Out | None:
        contract = contracts[message_context().topic]
        now = time.time()

        def state_of(_: str) -> RecipientState:  # Quix scopes `state` to the message key
            return st.from_json(state.get(STATE))

        def store(new: RecipientState) -> None:
            if new.is_empty():
                state.delete(STATE)
            else:
                state.set(STATE, st.to_json(new))

        try:
            decided, new = rules.record(contract, value, catalog, state_of, now)
        except DecodeError as error:
            return letter(key, value, error)
        if new is not None:
            store(new)
        # None: a state event, or a message already decided (redelivered)
        return None if decided is None else Out(decided.key, decided.value)

    def template_record(value: bytes | None, key: bytes | None, timestamp: int,
                        headers: Any) -> Out | None:
        try:
            apply_template(catalog, key, value)
        except DecodeError as error:
            return letter(key, value, error)
        return None

    recipients = [app.dataframe(topic) for name, topic in topics.items()
                  if contracts[name] != TEMPLATE]
    sdf = recipients[0]
    for other in recipients[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.apply(recipient_record, stateful=True, metadata=True)
    sdf = sdf.filter(lambda out: out is not None)
    sdf.to_topic(output, key=lambda out: out.key)

    for name, topic in topics.items():
        if contracts[name] == TEMPLATE:
            templates = app.dataframe(topic).apply(template_record, metadata=True)
            templates = templates.filter(lambda out: out is not None)
            templates.to_topic(output, key=lambda out: out.key)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    state_dir = tempfile.mkdtemp(prefix="quix-app-")
    try:
        app = PeerApplication(broker_address=args.bootstrap, consumer_group=args.group,
                              auto_offset_reset="earliest", state_dir=state_dir,
                              loglevel="WARNING")
        build(app, args, Rules())
        app.run()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
