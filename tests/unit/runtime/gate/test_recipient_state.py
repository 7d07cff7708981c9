"""Per-recipient state: expiry, idempotency keys, table encoding, and where a key lives."""

from __future__ import annotations

import random

import orjson
from kafka.partitioner import murmur2 as kafka_python_murmur2

from processors.core.policy import EMPTY
from processors.core.policy import state as st
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.gate.recipient_state import recipient_key
from tests.factories import inbound, message, preference, status

KEEP = st.Retention(service_window_seconds=100, cooldown_seconds=50, dedup_seconds=30)
CA = "+14165550123"


def test_expired_entries_are_pruned() -> None:
    state = st.with_inbound(st.with_inbound(EMPTY, 10.0), 950.0)
    state = st.with_limit_hit(st.with_limit_hit(state, 20.0), 990.0)
    state = st.with_decided(st.with_decided(state, "old", 30.0), "new", 995.0)
    pruned = st.prune(state, 1000.0, KEEP)
    assert pruned.inbound == (950.0,)
    assert pruned.limit_hits == (990.0,)
    assert pruned.decided == ((995.0, "new", ""),)


def test_a_messaging_limit_slot_is_open_for_24_hours_then_pruned() -> None:
    state = st.with_decided(st.with_slot(EMPTY, 1000.0), "m", 1000.0)
    assert st.slot_open(state, 1000.0 + 86399) and not st.slot_open(state, 1000.0 + 86400)
    assert st.prune(state, 1000.0 + 86399, KEEP).slot == 1000.0
    assert st.prune(state, 1000.0 + 86400, KEEP).is_empty()


def test_everything_expires_to_empty() -> None:
    state = st.with_limit_hit(st.with_inbound(EMPTY, 10.0), 10.0)
    assert st.prune(state, 10_000.0, KEEP).is_empty()


def test_opt_out_lasts_until_resume() -> None:
    stopped = st.with_preference(EMPTY, 10.0, "stop")
    assert st.prune(stopped, 10.0**9, KEEP).preferences == ((10.0, "stop"),)
    resumed = st.with_preference(stopped, 20.0, "resume")
    assert st.prune(resumed, 30.0, KEEP).preferences == ((20.0, "resume"),)
    # a lone resume stays: a stop stamped before it may still arrive, or come from a linked
    # identity, and must not opt the user out again
    assert st.prune(resumed, 10.0**9, KEEP).preferences == ((20.0, "resume"),)


def test_a_stop_arriving_after_a_later_resume_does_not_opt_out() -> None:
    # Found by the chaos audit: a preference "resume" was pruned as soon as it was alone, and a
    # 131050 status stamped before it, read later from another topic, then opted the user out.
    resumed = st.prune(st.with_preference(EMPTY, 20.0, "resume"), 30.0, KEEP)
    late_stop = st.apply_status(resumed, {"timestamp": "1970-01-01T00:00:10Z",
                                          "errors": [{"code": st.STOP_ERROR}]})
    assert st.preference_at(st.prune(late_stop, 40.0, KEEP), 40.0) == "resume"


def test_future_preference_is_kept_beside_the_current_one() -> None:
    state = st.with_preference(st.with_preference(EMPTY, 10.0, "stop"), 50.0, "resume")
    assert st.prune(state, 20.0, KEEP).preferences == ((10.0, "stop"), (50.0, "resume"))


def test_prune_returns_the_same_object_when_nothing_expires() -> None:
    state = st.with_inbound(EMPTY, 990.0)
    assert st.prune(state, 1000.0, KEEP) is state


def test_histories_are_bounded() -> None:
    state = EMPTY
    for at in range(100):
        state = st.with_inbound(state, float(at))
        state = st.with_decided(state, f"m{at}", float(at))
    assert len(state.inbound) == st.MAX_HISTORY and state.inbound[-1] == 99.0
    assert len(state.decided) == st.MAX_DECIDED
    assert st.already_decided(state, "m99") and not st.already_decided(state, "m0")


def test_table_encoding_round_trips() -> None:
    state = st.apply_status(EMPTY, status(CA, 131049, "2026-11-26T10:00:00Z"))
    state = st.apply_inbound(state, inbound(CA, "2026-11-26T09:00:00Z"))
    state = st.apply_preference(state, preference(CA, "stop", "2026-11-26T08:00:00Z"))
    state = st.with_decided(st.with_decided(state, "m-1", 5.0), "m-2", 6.0, "PAIR_RATE_LIMITED")
    assert st.from_json(st.to_json(state)) == state
    assert state.decided[-1] == (6.0, "m-2", "PAIR_RATE_LIMITED")
    assert st.from_json(None) == EMPTY
    # The store's bytes are to_json's, however they are written.
    linked = st.RecipientState(pair=(("+15550783881", 9.5, 3.0),),
                               links=(("bsuid", "US.123", 4.0),))
    slotted = st.with_decided(st.with_send(st.with_slot(state, 8.0), "", 10.0, 6.0), "m-3", 9.0)
    assert slotted.slot == 8.0, "later changes keep the user's messaging-limit slot"
    for value in (state, linked, st.RecipientState(home=("+14165550123", 7.0)),
                  st.with_send(state, "", 10.0, 6.0), slotted):
        assert st.to_bytes(value) == orjson.dumps(st.to_json(value))
        assert st.from_json(orjson.loads(st.to_bytes(value))) == value


def test_recipient_key_normalises_every_form() -> None:
    forms = [
        ("outbound_message", message(recipient="14165550123")),
        ("outbound_message", message(recipient="(416) 555-0123", recipient_region="CA")),
        ("delivery_status", status("+1 416 555 0123", 131049, "2026-11-26T10:00:00Z")),
        ("inbound_message", inbound("14165550123", "2026-11-26T10:00:00Z")),
        ("user_preference", preference(CA, "stop", "2026-11-26T10:00:00Z")),
    ]
    assert {recipient_key(contract, doc) for contract, doc in forms} == {f"acme:{CA}"}
    assert recipient_key("outbound_message", message(recipient="+1202555")) is None


def test_partition_for_matches_the_kafka_default_partitioner() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        key = f"tenant-{rng.randint(0, 99)}:+{rng.randint(10**9, 10**12)}"
        partitions = rng.choice([1, 3, 4, 8, 12, 32])
        expected = (kafka_python_murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        assert partition_for(key, partitions) == expected


def test_decided_ids_stored_before_outcomes_were_kept_still_load() -> None:
    old = orjson.dumps([[], [], [], [[5.0, "m-1"]]])
    state = st.from_json(orjson.loads(old))
    assert state.decided == ((5.0, "m-1", "?"),)
    assert st.already_decided(state, "m-1")


def test_a_sweep_deletes_records_with_nothing_left_a_chunk_at_a_time() -> None:
    from processors.core.policy import load_policy
    from processors.runtime.engine.state_store import MemoryBackend, PartitionStore
    from processors.runtime.gate import recipient_state

    store = PartitionStore(0, MemoryBackend())
    policies = load_policy()
    window = policies.base.parameters.service_window_seconds
    # 7 records that have expired entirely, 3 with an expired part beside a live opt-out
    for n in range(7):
        recipient_state.save(store, f"acme:+1416555{n:04d}", st.with_inbound(EMPTY, 1000.0))
    for n in range(3):
        live = st.apply_preference(EMPTY, preference(f"+1202555{n:04d}", "stop",
                                                     "2026-01-01T00:00:00Z"))
        recipient_state.save(store, f"acme:+1202555{n:04d}", st.with_inbound(live, 1000.0))
    store.committed(1)
    before = dict(store.items())
    chunks = list(recipient_state.sweep(store, policies, 3600, 1000.0 + window + 1, chunk=3))
    assert [len(changes) for _, changes in chunks] == [3, 3, 1]
    assert chunks[-1][0] == 3  # kept: the three with an opt-out
    assert all(value is None for _, changes in chunks for _, value in changes)
    store.committed(2)
    after = dict(store.items())
    # Left as they were: the expired inbound time no longer opens a window, and goes the next
    # time the record is written.
    assert after == {key: value for key, value in before.items() if key.startswith(b"acme:+1202")}
