"""Meta's webhook bodies, shaped as Meta documents them, -> the gate's own documents."""

from __future__ import annotations

from typing import Any

import pytest

from processors.core import contracts, webhooks
from processors.core.decode import DecodeError
from processors.core.judge import judge
from processors.core.policy import EMPTY, load_policy
from processors.core.policy import templates as tpl
from processors.core.timeutil import parse_rfc3339
from tests.factories import FIXTURES, message, meta_body, template_entry

AT = "2026-11-26T12:00:00.000Z"  # the fixtures' timestamp (1795694400)
RECEIVED = parse_rfc3339("2026-11-26T12:05:00Z")
WABA = "102290129340398"
PHONE_ID = "106540352242922"


def translate(name: str, tenant: str | None = "acme",
              tenant_map: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    return webhooks.translate(meta_body(name), RECEIVED, tenant, tenant_map)


@pytest.mark.parametrize("code", [131049, 131050, 130472])
def test_failed_status_with_error_code(code: int) -> None:
    [(contract, document)] = translate(f"status_failed_{code}")
    assert contract == "delivery_status"
    # The title Meta sent, read from the fixture (not from the translated document itself).
    [sent] = meta_body(f"status_failed_{code}")["entry"][0]["changes"][0]["value"]["statuses"]
    title = sent["errors"][0]["title"]
    assert title
    assert document == {
        "tenant_id": "acme", "recipient": "5511912345678", "status": "failed",
        "timestamp": AT, "errors": [{"code": code, "title": title}],
        "message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"}


def test_delivered_status_keeps_the_priced_category_only() -> None:
    # pricing.category says what was delivered (a delivered marketing message ends a 130472
    # hold); the conversation and the rest of pricing are not the gate's.
    [(contract, document)] = translate("status_delivered")
    assert contract == "delivery_status"
    assert document["status"] == "delivered" and document["errors"] == []
    assert document["category"] == "MARKETING"
    assert set(document) == {"tenant_id", "recipient", "status", "timestamp", "errors",
                             "message_id", "category"}


def test_a_category_meta_may_add_later_is_not_kept() -> None:
    body = meta_body("status_delivered")
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["pricing"]["category"] = "new_kind"
    [(_, document)] = webhooks.translate(body, 0.0, "acme")
    assert "category" not in document


def test_a_user_initiated_call_is_an_inbound_event_that_links() -> None:
    assert translate("calls_connect_user_initiated") == [("inbound_message", {
        "tenant_id": "acme", "sender": "14165550123", "timestamp": AT, "channel": "call",
        "user_id": "CA.13491208655302741918"})]


def test_a_call_by_bsuid_alone_names_the_bsuid() -> None:
    assert translate("calls_connect_bsuid_only") == [("inbound_message", {
        "tenant_id": "acme", "sender": "CA.13491208655302741918", "timestamp": AT,
        "channel": "call"})]


@pytest.mark.parametrize("name", ["calls_connect_business_initiated",
                                  "calls_terminate_user_initiated"])
def test_business_calls_and_terminations_open_nothing(name: str) -> None:
    assert translate(name) == []


def test_inbound_text_message() -> None:
    assert translate("inbound_text") == [("inbound_message", {
        "tenant_id": "acme", "sender": "14165550123", "timestamp": AT})]


def test_inbound_ad_referral_keeps_only_the_source_type() -> None:
    assert translate("inbound_ad_referral") == [("inbound_message", {
        "tenant_id": "acme", "sender": "5511987654321", "timestamp": AT,
        "referral": {"source_type": "ad"}})]


@pytest.mark.parametrize("value", ["stop", "resume"])
def test_user_preferences(value: str) -> None:
    assert translate(f"user_preferences_{value}") == [("user_preference", {
        "tenant_id": "acme", "recipient": "14165550123", "preference": value,
        "timestamp": AT})]


def test_other_preference_categories_are_ignored() -> None:
    body = meta_body("user_preferences_stop")
    body["entry"][0]["changes"][0]["value"]["user_preferences"][0]["category"] = "other"
    assert webhooks.translate(body, RECEIVED, "acme") == []


@pytest.mark.parametrize(("name", "status"), [("paused", "PAUSED"), ("disabled", "DISABLED")])
def test_template_status_update_states_the_status_only(name: str, status: str) -> None:
    assert translate(f"template_status_{name}") == [("template_update", {
        "tenant_id": "acme", "name": "promo", "language": "en_US", "status": status,
        "updated_at": AT})]


def test_template_approved_with_its_category() -> None:
    assert translate("template_status_approved") == [("template_update", {
        "tenant_id": "acme", "name": "promo", "language": "en_US", "status": "APPROVED",
        "category": "MARKETING", "updated_at": AT})]


@pytest.mark.parametrize(("event", "status"), [
    ("PENDING_DELETION", "DELETED"), ("REJECTED", "REJECTED"), ("REINSTATED", "APPROVED"),
    ("ARCHIVED", "ARCHIVED"), ("UNARCHIVED", "APPROVED")])
def test_template_event_mapping(event: str, status: str) -> None:
    body = meta_body("template_status_paused")
    body["entry"][0]["changes"][0]["value"]["event"] = event
    [(_, update)] = webhooks.translate(body, RECEIVED, "acme")
    assert update["status"] == status


@pytest.mark.parametrize("event", ["FLAGGED", "LOCKED", "UNLOCKED"])
def test_template_events_that_change_nothing_are_ignored(event: str) -> None:
    body = meta_body("template_status_paused")
    body["entry"][0]["changes"][0]["value"]["event"] = event
    assert webhooks.translate(body, RECEIVED, "acme") == []


@pytest.mark.parametrize(("name", "status"), [("archived", "ARCHIVED"),
                                              ("unarchived", "APPROVED")])
def test_template_archival(name: str, status: str) -> None:
    assert translate(f"template_status_{name}") == [("template_update", {
        "tenant_id": "acme", "name": "promo", "language": "en_US", "status": status,
        "updated_at": AT})]


def test_template_list_keeps_archived_templates() -> None:
    text = (FIXTURES / "template_list_archived.json").read_text()
    entries, skipped = webhooks.template_list_entries(text, "acme", RECEIVED)
    assert [(e["name"], e["status"], e["category"]) for e in entries] == [
        ("winter_sale", "ARCHIVED", "MARKETING"), ("shipping_update", "APPROVED", "UTILITY")]
    assert skipped == []
    pending_deletion = text.replace('"ARCHIVED"', '"PENDING_DELETION"')
    entries, _ = webhooks.template_list_entries(pending_deletion, "acme", RECEIVED)
    assert entries[0]["status"] == "DELETED"


# Business-scoped user IDs (BSUIDs): Meta names a user by phone number, BSUID, parent BSUID, or
# (a user with a username who has not written for 30 days) by BSUID alone.

CA_BSUID = "CA.13491208655302741918"
CA_PARENT = "CA.ENT.11815799212886844830"
BR_BSUID = "BR.1502576394655843"


def test_inbound_message_naming_the_number_and_bsuids_links_them() -> None:
    assert translate("inbound_text_linking") == [("inbound_message", {
        "tenant_id": "acme", "sender": "14165550123", "timestamp": AT,
        "user_id": CA_BSUID, "parent_user_id": CA_PARENT})]


def test_the_bsuids_of_contacts_link_a_message_that_omits_them() -> None:
    body = meta_body("inbound_text_linking")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["from_user_id"], message["from_parent_user_id"]
    [(_, document)] = webhooks.translate(body, RECEIVED, "acme")
    assert (document["sender"], document["user_id"], document["parent_user_id"]) == (
        "14165550123", CA_BSUID, CA_PARENT)


def test_inbound_message_by_bsuid_alone() -> None:
    assert translate("inbound_text_bsuid_only") == [("inbound_message", {
        "tenant_id": "acme", "sender": CA_BSUID, "timestamp": AT})]


def test_inbound_message_by_parent_bsuid_alone() -> None:
    body = meta_body("inbound_text_bsuid_only")
    value = body["entry"][0]["changes"][0]["value"]
    del value["messages"][0]["from_user_id"]
    value["messages"][0]["from_parent_user_id"] = CA_PARENT
    value["contacts"] = [{"profile": {"name": "Sheena Nelson"}, "parent_user_id": CA_PARENT}]
    [(_, document)] = webhooks.translate(body, RECEIVED, "acme")
    assert document["sender"] == CA_PARENT and "user_id" not in document


def test_a_message_that_names_nobody_is_skipped() -> None:
    body = meta_body("inbound_text_bsuid_only")
    del body["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"]
    assert webhooks.translate(body, RECEIVED, "acme") == []


def test_status_by_bsuid_alone() -> None:
    [(contract, document)] = translate("status_failed_131049_bsuid_only")
    assert contract == "delivery_status"
    assert document["recipient"] == BR_BSUID and document["errors"][0]["code"] == 131049
    assert "user_id" not in document


def test_status_naming_the_number_and_bsuid_links_them() -> None:
    [(_, document)] = translate("status_delivered_linking")
    assert (document["recipient"], document["user_id"], document["status"]) == (
        "5511912345678", BR_BSUID, "delivered")


def test_status_by_parent_bsuid_alone() -> None:
    body = meta_body("status_failed_131049_bsuid_only")
    item = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    del item["recipient_user_id"]
    item["recipient_parent_user_id"] = "BR.ENT.1502576394655843"
    [(_, document)] = webhooks.translate(body, RECEIVED, "acme")
    assert document["recipient"] == "BR.ENT.1502576394655843"


def test_user_preference_by_bsuid_alone() -> None:
    assert translate("user_preferences_stop_bsuid_only") == [("user_preference", {
        "tenant_id": "acme", "recipient": CA_BSUID, "preference": "stop", "timestamp": AT})]


def test_user_preference_naming_the_number_and_bsuids_links_them() -> None:
    body = meta_body("user_preferences_stop")
    item = body["entry"][0]["changes"][0]["value"]["user_preferences"][0]
    item.update(user_id=CA_BSUID, parent_user_id=CA_PARENT)
    [(_, document)] = webhooks.translate(body, RECEIVED, "acme")
    assert (document["recipient"], document["user_id"], document["parent_user_id"]) == (
        "14165550123", CA_BSUID, CA_PARENT)


def test_bsuid_documents_follow_the_contracts() -> None:
    for name in ("inbound_text_linking", "inbound_text_bsuid_only",
                 "status_failed_131049_bsuid_only", "status_delivered_linking",
                 "user_preferences_stop_bsuid_only"):
        documents = translate(name)
        assert documents, f"{name} translated to nothing: the check below would be vacuous"
        for contract, document in documents:
            assert contracts.first_error(contract, document) is None, name


def test_template_status_without_entry_time_takes_the_record_time() -> None:
    body = meta_body("template_status_paused")
    del body["entry"][0]["time"]
    [(_, update)] = webhooks.translate(body, RECEIVED, "acme")
    assert update["updated_at"] == "2026-11-26T12:05:00.000Z"


def test_category_update_to_marketing() -> None:
    assert translate("template_category_update_marketing") == [("template_update", {
        "tenant_id": "acme", "name": "welcome_template", "language": "en_US",
        "category": "MARKETING", "updated_at": AT})]


def test_impending_category_update_applies_from_its_timestamp() -> None:
    assert translate("template_category_update_impending") == [
        ("template_update", {"tenant_id": "acme", "name": "welcome_template",
                             "language": "en_US", "category": "UTILITY", "updated_at": AT}),
        ("template_update", {"tenant_id": "acme", "name": "welcome_template",
                             "language": "en_US", "category": "MARKETING",
                             "updated_at": "2026-11-27T12:00:00.000Z"})]


def test_two_entries_two_tenants_from_the_map() -> None:
    tenant_map = {f"waba:{WABA}": "acme", "phone:106540352242923": "globex"}
    documents = translate("two_entries", None, tenant_map)
    assert [(c, d["tenant_id"]) for c, d in documents] == [
        ("delivery_status", "acme"), ("inbound_message", "globex")]


def test_header_wins_over_the_map() -> None:
    documents = translate("two_entries", "initech", {f"waba:{WABA}": "acme"})
    assert {d["tenant_id"] for _, d in documents} == {"initech"}


def test_phone_number_id_before_waba_id() -> None:
    tenant_map = {f"waba:{WABA}": "acme", f"phone:{PHONE_ID}": "acme-sales"}
    [(_, document)] = translate("inbound_text", None, tenant_map)
    assert document["tenant_id"] == "acme-sales"


def test_no_tenant_is_refused_whole() -> None:
    with pytest.raises(DecodeError) as raised:
        translate("two_entries", None, {f"waba:{WABA}": "acme"})
    assert raised.value.reason == "no_tenant"


@pytest.mark.parametrize("body", [
    {"object": "page", "entry": []},
    {"entry": [{"id": "1"}]},
    {"object": "whatsapp_business_account", "entry": "x"},
    {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "x"}]}]},
    [1, 2],
])
def test_not_a_meta_webhook(body: Any) -> None:
    with pytest.raises(DecodeError) as raised:
        webhooks.translate(body, RECEIVED, "acme")
    assert raised.value.reason == "not_meta_webhook"


def test_unknown_fields_and_changes_are_ignored() -> None:
    body = meta_body("inbound_text")
    body["extra"] = {"anything": 1}
    body["entry"][0]["changes"].append({"field": "account_update", "value": {"event": "X"}})
    body["entry"][0]["changes"][0]["value"]["messages"][0]["unknown"] = True
    assert [c for c, _ in webhooks.translate(body, RECEIVED, "acme")] == ["inbound_message"]


def test_a_status_without_timestamp_is_not_a_meta_webhook() -> None:
    body = meta_body("status_failed_131049")
    del body["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"]
    with pytest.raises(DecodeError) as raised:
        webhooks.translate(body, RECEIVED, "acme")
    assert raised.value.reason == "not_meta_webhook"


def test_read_keeps_the_gates_own_contracts() -> None:
    own = template_entry()
    assert webhooks.read("template_entry", own, RECEIVED) == [("template_entry", own)]
    with pytest.raises(DecodeError) as raised:
        webhooks.read("template_entry", {"name": "x"}, RECEIVED)
    assert raised.value.reason == "schema_invalid"
    with pytest.raises(DecodeError) as raised:
        webhooks.read(webhooks.WEBHOOK, own, RECEIVED, "acme")
    assert raised.value.reason == "not_meta_webhook"


@pytest.mark.parametrize(("headers", "tenant"), [
    ([("tenant_id", b"acme")], "acme"), ({"tenant_id": "acme"}, "acme"),
    ([("other", b"x")], None), (None, None), ([("tenant_id", b" ")], None)])
def test_header_tenant(headers: Any, tenant: str | None) -> None:
    assert webhooks.header_tenant(headers) == tenant


def test_tenant_map_file_is_checked() -> None:
    assert webhooks.load_tenant_map('{"waba:1": "a", "phone:2": "b"}') == {
        "waba:1": "a", "phone:2": "b"}
    # Each refusal says why (a bare ValueError would also pass on an unrelated bug).
    for bad, why in [('[]', "expected a JSON object"), ('{"1": "a"}', "entry '1'"),
                     ('{"waba:1": ""}', "entry 'waba:1'"), ("nope", "not JSON")]:
        with pytest.raises(ValueError, match=why):
            webhooks.load_tenant_map(bad)


# The catalog merge: a status update carries no category, a category update no status.

def test_catalog_keeps_category_and_status_from_separate_updates() -> None:
    history = tpl.merge(None, template_entry("promo", "UTILITY", "APPROVED",
                                             "2026-11-01T00:00:00Z"))
    for name in ("template_status_paused", "template_category_update_marketing"):
        for _, update in webhooks.translate(meta_body(name), RECEIVED, "acme"):
            update = {**update, "name": "promo"}
            history = tpl.merge(history, update)
    # Both webhooks are dated 12:00: one entry stating both, older entries untouched.
    entry = tpl.entry_at(history, parse_rfc3339(AT))
    assert entry is not None
    assert (entry["status"], entry["category"]) == ("PAUSED", "MARKETING")
    before = tpl.entry_at(history, parse_rfc3339("2026-11-20T00:00:00Z"))
    assert before is not None and (before["status"], before["category"]) == (
        "APPROVED", "UTILITY")


def test_status_update_after_an_announced_recategorisation() -> None:
    history = tpl.merge(None, template_entry("welcome_template", "UTILITY", "APPROVED",
                                             "2026-11-01T00:00:00Z"))
    for _, update in translate("template_category_update_impending"):
        history = tpl.merge(history, update)
    paused = meta_body("template_status_paused")
    paused["entry"][0]["time"] += 3600  # paused at 13:00, before the change is due
    paused["entry"][0]["changes"][0]["value"]["message_template_name"] = "welcome_template"
    for _, update in webhooks.translate(paused, RECEIVED, "acme"):
        history = tpl.merge(history, update)
    at_noon = parse_rfc3339(AT)
    assert tpl.pending_category(history, at_noon) is not None
    after = tpl.entry_at(history, at_noon + 86400)
    assert after is not None and (after["category"], after["status"]) == ("MARKETING", "PAUSED")


def test_a_later_entry_with_the_same_category_is_no_recategorisation() -> None:
    history = tpl.merge(None, template_entry("promo", "MARKETING", "APPROVED",
                                             "2026-11-01T00:00:00Z"))
    history = tpl.merge(history, template_entry("promo", "MARKETING", "PAUSED",
                                                "2026-12-01T00:00:00Z"))  # status only moves
    mid_november = parse_rfc3339("2026-11-15T00:00:00Z")
    assert tpl.pending_category(history, mid_november) is None
    history = tpl.merge(history, template_entry("promo", "UTILITY", "APPROVED",
                                                "2026-12-05T00:00:00Z"))
    pending = tpl.pending_category(history, mid_november)
    assert pending is not None
    assert (pending["category"], pending["updated_at"]) == ("UTILITY", "2026-12-05T00:00:00Z")


def test_judge_reports_the_category_meta_announced_for_later() -> None:
    doc = message(recipient="+14165550123")
    entry = template_entry("promo", "UTILITY")
    announced = template_entry("promo", "MARKETING", updated_at="2026-12-01T00:00:00Z")
    at = parse_rfc3339(AT)
    assert judge(doc, EMPTY, entry, load_policy().base, at, upcoming=announced) \
        .recategorized == "MARKETING"
    assert judge(doc, EMPTY, entry, load_policy().base, at).recategorized is None


def test_merge_folds_old_entries_beyond_the_history_limit() -> None:
    history = tpl.merge(None, template_entry("promo", "UTILITY", "APPROVED",
                                             "2026-11-01T00:00:00Z"))
    for hour in range(1, 8):
        history = tpl.merge(history, {"tenant_id": "acme", "name": "promo",
                                      "language": "en_US", "status": "APPROVED",
                                      "updated_at": f"2026-11-02T0{hour}:00:00Z"})
    assert len(history) == tpl.MAX_HISTORY
    newest = tpl.entry_at(history, None)
    assert newest is not None and newest["category"] == "UTILITY"



def test_route_agent_reads_a_record_with_headers_and_record_time() -> None:
    import orjson

    from processors.runtime.engine.records import Record
    from processors.runtime.gate.processor import read_input
    from processors.settings import Settings

    body = meta_body("template_status_paused")
    del body["entry"][0]["time"]
    record = Record("t", 0, 0, None, orjson.dumps(meta_body("two_entries")), RECEIVED,
                    [("tenant_id", b"acme")])
    documents = read_input("delivery_status", record, Settings())
    assert [(c, d["tenant_id"]) for c, d in documents] == [
        ("delivery_status", "acme"), ("inbound_message", "acme")]
    record = Record("t", 0, 0, None, orjson.dumps(body), RECEIVED)
    mapped = Settings(tenant_map={f"waba:{WABA}": "globex"})
    [(_, update)] = read_input("meta_webhook", record, mapped)
    assert (update["tenant_id"], update["updated_at"]) == ("globex", "2026-11-26T12:05:00.000Z")
    with pytest.raises(DecodeError) as raised:
        read_input("meta_webhook", record, Settings())
    assert raised.value.reason == "no_tenant"


def test_tenant_map_setting(tmp_path: Any) -> None:
    from processors.settings import SettingsError, from_env

    path = tmp_path / "tenants.json"
    path.write_text('{"waba:1": "acme"}')
    assert from_env({"OUTBOUND_GATE_TENANT_MAP": str(path)}).tenant_map == {"waba:1": "acme"}
    assert from_env({}).tenant_map == {}
    path.write_text('{"1": "acme"}')
    for value in (str(path), str(tmp_path / "missing.json")):
        with pytest.raises(SettingsError, match="OUTBOUND_GATE_TENANT_MAP"):
            from_env({"OUTBOUND_GATE_TENANT_MAP": value})


# --- messaging limits: business_capability_update, phone_number_quality_update -------------


def limit_body(field: str, value: dict[str, Any]) -> dict[str, Any]:
    """A body of one messaging-limit change, shaped as Meta's references show it."""
    body = meta_body("business_capability_update" if field == "business_capability_update"
                     else "phone_number_quality_update")
    body["entry"][0]["changes"][0]["value"] = value
    return body


def limits(body: dict[str, Any]) -> list[tuple[int | None, str]]:
    return [(d["limit"], d["source"]) for c, d in webhooks.translate(body, RECEIVED, "acme")
            if c == webhooks.MESSAGING_LIMIT]


def test_business_capability_update_is_a_messaging_limit() -> None:
    assert translate("business_capability_update") == [(webhooks.MESSAGING_LIMIT, {
        "tenant_id": "acme", "limit": 2000, "updated_at": AT,
        "source": "business_capability_update"})]


def test_phone_number_quality_update_is_a_messaging_limit() -> None:
    assert translate("phone_number_quality_update") == [(webhooks.MESSAGING_LIMIT, {
        "tenant_id": "acme", "limit": 2000, "updated_at": AT,
        "source": "phone_number_quality_update"})]


@pytest.mark.parametrize(("raw", "limit"), [
    (250, 250), (2000, 2000), (10000, 10000), (100000, 100000), (-1, None),
    ("TIER_250", 250), ("TIER_2K", 2000), ("TIER_10K", 10000), ("TIER_100K", 100000),
    ("TIER_UNLIMITED", None), ("TIER_50", 50), ("TIER_1K", 1000), ("2000", 2000), ("-1", None),
])
def test_business_capability_limit_values(raw: Any, limit: int | None) -> None:
    body = limit_body("business_capability_update",
                      {"max_daily_conversations_per_business": raw})
    assert limits(body) == [(limit, "business_capability_update")]


@pytest.mark.parametrize("raw", ["TIER_NOT_SET", "TIER_5K", "lots", 0, -2, True, 2.5, None,
                                 [250], {"tier": 250}, ""])
def test_unknown_limit_values_are_ignored(raw: Any) -> None:
    for field, name in (("business_capability_update", "max_daily_conversations_per_business"),
                        ("phone_number_quality_update", "max_daily_conversations_per_business"),
                        ("phone_number_quality_update", "current_limit")):
        assert limits(limit_body(field, {name: raw})) == []


def test_older_webhooks_name_the_limit_per_phone() -> None:
    # Meta's "Messaging limits": v23.0 and older webhooks carry it in
    # max_daily_conversation_per_phone (until February 2026); the business field wins.
    older = limit_body("business_capability_update", {"max_daily_conversation_per_phone": -1,
                                                      "max_phone_numbers_per_waba": 25})
    assert limits(older) == [(None, "business_capability_update")]
    both = limit_body("business_capability_update", {"max_daily_conversation_per_phone": 250,
                                                     "max_daily_conversations_per_business":
                                                         "TIER_10K"})
    assert limits(both) == [(10000, "business_capability_update")]
    neither = limit_body("business_capability_update", {"max_phone_numbers_per_business": 2})
    assert limits(neither) == []


@pytest.mark.parametrize(("value", "limit"), [
    ({"event": "UPGRADE", "current_limit": "TIER_10K"}, 10000),
    ({"event": "DOWNGRADE", "old_limit": "TIER_2K", "current_limit": "TIER_250"}, 250),
    ({"event": "UPGRADE", "current_limit": "TIER_1K",
      "max_daily_conversations_per_business": "TIER_100K"}, 100000),
    ({"event": "UPGRADE", "max_daily_conversations_per_business": "TIER_UNLIMITED"}, None),
    ({"event": "ONBOARDING", "current_limit": "TIER_50"}, 50),
    ({"current_limit": "TIER_250"}, 250),
])
def test_quality_update_limit_values(value: dict[str, Any], limit: int | None) -> None:
    assert limits(limit_body("phone_number_quality_update", value)) == [
        (limit, "phone_number_quality_update")]


def test_throughput_upgrade_is_not_an_unlimited_messaging_limit() -> None:
    # Meta's own example: THROUGHPUT_UPGRADE with TIER_UNLIMITED is the number's throughput.
    assert translate("phone_number_quality_update_throughput") == []
    body = limit_body("phone_number_quality_update", {
        "event": "THROUGHPUT_UPGRADE", "max_daily_conversations_per_business": "TIER_10K"})
    assert limits(body) == [(10000, "phone_number_quality_update")]


def test_messaging_limit_tenant_and_time() -> None:
    body = meta_body("business_capability_update")
    [(_, mapped)] = webhooks.translate(body, RECEIVED, None, {f"waba:{WABA}": "globex"})
    assert (mapped["tenant_id"], mapped["updated_at"]) == ("globex", AT)
    with pytest.raises(DecodeError) as raised:
        webhooks.translate(body, RECEIVED, None, {})
    assert raised.value.reason == "no_tenant"
    del body["entry"][0]["time"]  # no entry time: when the body was received
    [(_, undated)] = webhooks.translate(body, RECEIVED, "acme")
    assert undated["updated_at"] == "2026-11-26T12:05:00.000Z"

