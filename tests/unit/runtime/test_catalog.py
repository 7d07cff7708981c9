"""The catalog replica: every worker's full copy of the catalog, built from the table's
changelog in any partition order."""

from __future__ import annotations

import orjson

from processors.core.timeutil import parse_rfc3339
from processors.runtime.catalog import CatalogReplica, lookup_with_upcoming, tenants
from tests.factories import template_entry

KEY = b'"acme:promo:en_US"'


def record(*entries: dict[str, object]) -> bytes:
    return orjson.dumps(list(entries))


def test_histories_written_from_two_workers_are_merged_in_either_order() -> None:
    # Worker A wrote the approval; worker B, whose table lacked it, wrote only the pause.
    approved = template_entry(status="APPROVED", updated_at="2026-11-01T00:00:00Z")
    paused = template_entry(status="PAUSED", updated_at="2026-11-20T00:00:00Z")
    replicas = [CatalogReplica(), CatalogReplica()]
    replicas[0].apply(KEY, record(approved))
    replicas[0].apply(KEY, record(paused))
    replicas[1].apply(KEY, record(paused))
    replicas[1].apply(KEY, record(approved))
    assert replicas[0].data == replicas[1].data
    for replica in replicas:
        before, _ = lookup_with_upcoming(replica, "acme", "promo", "en_US",
                                         parse_rfc3339("2026-11-10T00:00:00Z"))
        now, _ = lookup_with_upcoming(replica, "acme", "promo", "en_US",
                                      parse_rfc3339("2026-11-30T00:00:00Z"))
        assert before is not None and before["status"] == "APPROVED"
        assert now is not None and now["status"] == "PAUSED"


def test_a_tombstone_deletes_and_tenants_are_listed() -> None:
    replica = CatalogReplica()
    replica.apply(KEY, record(template_entry()))
    replica.apply(b'"a:b:c:notice:en_US"', record(template_entry("notice", tenant_id="a:b:c")))
    assert tenants(replica) == {"acme", "a:b:c"} and len(replica) == 2
    replica.apply(KEY, None)
    assert replica.get("acme:promo:en_US") is None and tenants(replica) == {"a:b:c"}
    replica.apply(None, record(template_entry()))  # no key: nothing to apply
    assert len(replica) == 1


def test_a_tenants_messaging_limit_is_learned_from_its_newest_webhook_in_effect() -> None:
    from processors.core import webhooks
    from processors.runtime.catalog import apply, learned_limit, limit_key

    table: dict[str, object] = {}
    def body(at: str, limit: object) -> dict[str, object]:
        return {"object": "whatsapp_business_account", "entry": [{
            "id": "1", "time": int(parse_rfc3339(at)),
            "changes": [{"field": "business_capability_update",
                         "value": {"max_daily_conversations_per_business": limit}}]}]}

    earlier, later = body("2026-11-20T00:00:00Z", "TIER_2K"), body("2026-11-25T00:00:00Z", -1)
    replica = CatalogReplica()
    for document in (later, earlier):  # arrival order does not matter: time does
        assert apply(table, None, orjson.dumps(document), 1 << 20, webhooks.WEBHOOK, 0.0,
                     "acme") == []
        replica.apply(orjson.dumps(limit_key("acme")), orjson.dumps(table[limit_key("acme")]))
    assert learned_limit(replica, "acme", parse_rfc3339("2026-11-01T00:00:00Z")) == (None, False)
    assert learned_limit(replica, "acme", parse_rfc3339("2026-11-21T00:00:00Z")) == (2000, True)
    assert learned_limit(replica, "acme", parse_rfc3339("2026-11-26T00:00:00Z")) == (None, True)
    assert learned_limit(replica, "other", parse_rfc3339("2026-11-26T00:00:00Z")) == (None, False)
    assert tenants(replica) == {"acme"}
