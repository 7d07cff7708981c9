"""Messaging limits, live, on three workers: a tenant whose webhook says 1,000 sends 5,000
templates to distinct users outside any service window, and the worker that holds the
tenant's count is killed with SIGKILL in the middle. Exactly 1,000 are accepted, the rest
refused with MESSAGING_LIMIT_REACHED; each message decided once, none lost."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from processors.core.timeutil import format_rfc3339
from processors.runtime import kafka_clients
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.gate.tenant_slots import ledger_key
from tests.e2e.conftest import poll, start_worker, stop_worker
from tests.e2e.test_live_state import new_recipient
from tests.e2e.two_workers import owned
from tests.factories import message, template_entry

pytestmark = pytest.mark.e2e

TENANT = "limited"
LIMIT = 1000
SENDS = 5000
PARTITIONS = 4


def limit_webhook(limit: int) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "time": int(time.time()) - 5,
        "changes": [{"field": "business_capability_update",
                     "value": {"max_daily_conversations_per_business": limit}}]}]})


def test_three_workers_never_admit_more_than_the_limit_through_a_kill(
        bootstrap: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    gates = [start_worker(bootstrap, tmp_path, run_id, name=f"w{i}") for i in range(3)]
    poll(lambda: len(set().union(*(owned(g) for g in gates))) == PARTITIONS, 90,
         "the three workers to hold every partition", gates[0].problem)
    first = gates[0]
    producer = kafka_clients.producer(bootstrap)
    key = f"{TENANT}:renewal:en_US"
    producer.send(first.topics.templates, key=key.encode(), value=orjson.dumps(
        template_entry("renewal", "UTILITY", tenant_id=TENANT)))
    producer.send(first.topics.webhooks, key=TENANT.encode(), value=limit_webhook(LIMIT),
                  headers=[("tenant_id", TENANT.encode())])
    producer.flush()
    limit_key = f"{TENANT}:~messaging-limit"
    poll(lambda: all(g.catalog_entry(key) and (g.catalog_entry(limit_key) or {}).get("limit")
                     == LIMIT for g in gates), 60,
         "every worker to know the template and the tenant's limit", first.problem)

    reader = first.reader()
    users: set[str] = set()
    while len(users) < SENDS:
        users.add(new_recipient())
    sent = []
    for user in users:
        sent.append(message(message_id=f"m-{uuid.uuid4().hex[:12]}", tenant_id=TENANT,
                            recipient=user, template={"name": "renewal", "language": "en_US"},
                            created_at=format_rfc3339(time.time())))
    counter_partition = partition_for(ledger_key(TENANT), PARTITIONS)
    victim = next(g for g in gates if counter_partition in owned(g))
    for index, document in enumerate(sent):
        producer.send(first.topics.outbound, key=document["recipient"].encode(),
                      value=orjson.dumps(document))
        if index == SENDS // 2:
            producer.flush()
            reader.wait_for(lambda outs: len(outs) >= SENDS // 5, 120,
                            "a fifth of the decisions before the kill")
            victim.process.kill()  # SIGKILL: the holder of the tenant's count
    producer.flush()
    producer.close()
    survivors = [g for g in gates if g is not victim]
    ids = {document["message_id"] for document in sent}
    outputs = reader.wait_for(
        lambda outs: {o.value.get("message_id") for o in outs} >= ids, 300,
        f"decisions for all {SENDS} messages after the kill")
    reader.close()
    decided = Counter(o.value["message_id"] for o in outputs)
    assert not [m for m, n in decided.items() if n > 1], "a message decided twice"
    accepted = [o for o in outputs if o.topic == first.topics.accepted]
    rejected = [o for o in outputs if o.topic == first.topics.rejected]
    codes = Counter(o.value.get("error_code") for o in rejected)
    assert len(accepted) == LIMIT, (len(accepted), codes)
    assert codes == {"MESSAGING_LIMIT_REACHED": SENDS - LIMIT}, codes
    retry = {o.value["retry_after"] for o in rejected}
    assert all(r is not None for r in retry)
    for gate in survivors:
        assert stop_worker(gate) == 0
