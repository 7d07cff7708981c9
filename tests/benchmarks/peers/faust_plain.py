"""Contender "faust_plain": the gate's rules as a plain Faust app, the way Faust's docs write it.

    python -m tests.benchmarks.peers.faust_plain --bootstrap 127.0.0.1:9092 --prefix P \
        --group G --output OUT [--partitions 8]

One agent per input topic, one event at a time (`async for value in stream`), one
`await output.send(...)` per outbound message or dead letter, no batching. Recipient state is a
Faust Table (memory store, changelog-backed like the gate's), the template catalog a
GlobalTable (memory). The rules come from the gate's pure core (see common.py), so decisions are
the gate's; there is no repartition hop (the harness keys every record by tenant:<identity>, the
E.164 number or the BSUID, already), linking of a number and a BSUID is simplified (common.py
says how) and there is no policy topic (the packaged policy is used throughout).

Prints READY when the first rebalance (assignment and table recovery) is complete; stops on
SIGTERM/SIGINT (Faust's worker) and exits 0.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faust

from processors.core.decode import DecodeError, decode
from processors.core.policy import RecipientState
from processors.core.policy import state as st
from tests.benchmarks.peers.common import (
    OUTBOUND,
    TEMPLATE,
    PeerArgs,
    Rules,
    apply_template,
    dead_letter,
    parse_args,
    partition_count,
    ready,
)

RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


def create_app(args: PeerArgs, partitions: int, datadir: Path, rules: Rules) -> faust.App:
    app = faust.App(
        args.group,
        broker=[f"kafka://{server}" for server in args.bootstrap.split(",")],
        store="memory://",
        datadir=str(datadir),
        topic_partitions=partitions,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    json_schema: Any = faust.Schema(key_serializer="json", value_serializer="json")
    states = app.Table("recipient-state", default=None, partitions=partitions,
                       store="memory://", schema=json_schema)
    catalog = app.GlobalTable("template-catalog", default=None, partitions=partitions,
                              store="memory://", schema=json_schema)
    output = app.topic(args.output, **RAW)

    def state_of(key: str) -> RecipientState:
        return st.from_json(states.get(key))

    def store(key: str, state: RecipientState) -> None:
        if state.is_empty():
            states.pop(key, None)
        else:
            states[key] = st.to_json(state)

    async def send_dead_letter(stream: faust.StreamT[bytes], error: DecodeError) -> None:
        event = stream.current_event
        assert event is not None
        message = event.message
        await output.send(key=message.key, value=dead_letter(
            message.topic, message.partition, message.offset, message.key, message.value, error))

    for name, contract in args.topics().items():
        source = app.topic(name, **RAW)
        agent_name = f"peer-{name.rsplit('.', 1)[-1]}"
        if contract == OUTBOUND:
            @app.agent(source, name=agent_name)
            async def decide(stream: faust.StreamT[bytes]) -> None:
                async for value in stream:
                    try:
                        document = decode(OUTBOUND, value)
                    except DecodeError as error:
                        await send_dead_letter(stream, error)
                        continue
                    decided = rules.outbound(document, catalog, state_of, time.time())
                    if decided is None:  # already decided (redelivered)
                        continue
                    await output.send(key=decided.key, value=decided.value)
                    if decided.state_key and decided.state is not None:
                        store(decided.state_key, decided.state)
        elif contract == TEMPLATE:
            @app.agent(source, name=agent_name)
            async def load_catalog(stream: faust.StreamT[bytes]) -> None:
                async for value in stream:
                    event = stream.current_event
                    assert event is not None
                    try:
                        apply_template(catalog, event.message.key, value)
                    except DecodeError as error:
                        await send_dead_letter(stream, error)
        else:
            def state_agent(contract: str) -> Any:
                async def update_state(stream: faust.StreamT[bytes]) -> None:
                    async for value in stream:
                        try:
                            document = decode(contract, value)
                            key, state = rules.state_event(contract, document, state_of,
                                                           time.time())
                        except DecodeError as error:
                            await send_dead_letter(stream, error)
                            continue
                        store(key, state)
                return update_state

            app.agent(source, name=agent_name)(state_agent(contract))

    announced = False

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def announce(sender: faust.App, **_: Any) -> None:
        nonlocal announced
        if not announced:
            announced = True
            ready()

    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    partitions = args.partitions or partition_count(args.bootstrap, f"{args.prefix}.outbound")
    datadir = Path(tempfile.mkdtemp(prefix="faust-plain-"))
    try:
        app = create_app(args, partitions, datadir, Rules())
        # redirect_stdouts=False: READY must reach stdout, not the log.
        worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
        worker.spinner = None  # its terminal escapes would go to stdout, around READY
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
