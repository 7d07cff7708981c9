"""Meta's webhook bodies -> the gate's own state documents (DESIGN §3). Pure: no Kafka, no clock.

A body is what Meta POSTs to a webhook receiver, unchanged:
``{"object": "whatsapp_business_account", "entry": [{"id": <WABA id>, "time"?: <unix>,
"changes": [{"field": ..., "value": {...}}]}]}``. One body can carry several entries and
changes; each yields zero or more documents:

- ``messages``: ``value.statuses[]`` -> delivery_status, ``value.messages[]`` -> inbound_message;
  a system message ``user_changed_number`` -> inbound_message of channel ``system`` naming the
  new number (sender) and the old one (previous_number), see _number_change; other system
  messages are not the user writing and yield nothing
- ``user_preferences``: ``value.user_preferences[]`` (marketing_messages) -> user_preference
- ``calls``: ``value.calls[]`` of a user-initiated call, event ``connect`` -> inbound_message
  (channel ``call``): a call from the user opens the customer service window as a message does
- ``message_template_status_update`` -> template_update carrying a status (and the category
  when Meta includes ``message_template_category``)
- ``template_category_update`` -> template_update carrying a category; an impending change
  (``correct_category`` + ``category_update_timestamp``) also yields the corrected category
  from that time on

- ``business_capability_update`` and ``phone_number_quality_update`` -> messaging_limit: the
  tenant's (business portfolio's) messaging limit, see _messaging_limit

template_update is the catalog's partial entry: it states only the fields the webhook knows;
the catalog (processors.core.policy.templates) keeps the rest from what it knew before.
messaging_limit, produced only here too: {"tenant_id", "limit": new users per 24 h, None for
unlimited, "updated_at": RFC 3339, "source": the webhook field}
(processors.core.policy.messaging_limit).

Meta's bodies name no tenant: the record header ``tenant_id`` wins, else the tenant map
(``phone:<phone_number_id>``, then ``waba:<WABA id>``). Unknown fields and fields the gate does
not use are ignored. A body that is not a Meta webhook, or whose tenant cannot be resolved,
raises DecodeError (reason ``not_meta_webhook`` or ``no_tenant``) and nothing of it is applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from processors.core.decode import DecodeError, validate
from processors.core.enrich import PHONE, parse_recipient
from processors.core.timeutil import format_rfc3339

OBJECT = "whatsapp_business_account"
WEBHOOK = "meta_webhook"  # the "contract" of the webhooks topic: Meta's bodies only
TEMPLATE_UPDATE = "template_update"  # partial catalog entry, produced only here
MESSAGING_LIMIT = "messaging_limit"  # a tenant's messaging limit, produced only here
STATE_CONTRACTS = frozenset({"delivery_status", "inbound_message", "user_preference"})
TENANT_HEADER = "tenant_id"
CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
# A status's pricing.category (lower case in Meta's bodies): what a delivered message was.
PRICED_CATEGORIES = frozenset({*CATEGORIES, "SERVICE"})
DELIVERY_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
PREFERENCES = frozenset({"stop", "resume"})

# Meta's template status (webhook "event", or "status" of the template list) -> catalog status.
# Events that do not change whether a template can be sent (FLAGGED: quality warning;
# LOCKED/UNLOCKED: editing) are ignored. Archived templates cannot be sent until unarchived
# (Meta's "Template archival"); the gate takes an unarchived one as approved again.
TEMPLATE_STATUSES: Mapping[str, str] = {
    "APPROVED": "APPROVED",
    "REINSTATED": "APPROVED",
    "UNARCHIVED": "APPROVED",
    "ARCHIVED": "ARCHIVED",
    "PENDING": "PENDING",
    "IN_APPEAL": "PENDING",
    "PAUSED": "PAUSED",
    "DISABLED": "DISABLED",
    "REJECTED": "REJECTED",
    "PENDING_DELETION": "DELETED",
    "DELETED": "DELETED",
}

# Meta's messaging-limit tiers -> unique users per 24 h (None: unlimited). TIER_50, TIER_1K are
# older tiers that may still appear; TIER_NOT_SET (a number that never sent) states no limit.
LIMIT_TIERS: Mapping[str, int | None] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_1K": 1_000,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": None,
}

Document = tuple[str, dict[str, Any]]  # (contract, document)


def looks_like_webhook(document: Any) -> bool:
    """A JSON value meant as a Meta webhook body rather than one of the gate's contracts."""
    return isinstance(document, dict) and ("object" in document or "entry" in document)


def header_tenant(headers: Any) -> str | None:
    """The tenant_id record header, from Faust/aiokafka (pairs) or an offline envelope (dict)."""
    if not headers:
        return None
    pairs: Iterable[tuple[Any, Any]] = headers.items() if isinstance(headers, Mapping) \
        else headers
    for name, value in pairs:
        if name != TENANT_HEADER or value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) \
            else str(value)
        return text.strip() or None
    return None


def read(contract: str, document: Any, received_at: float, tenant: str | None = None,
         tenant_map: Mapping[str, str] | None = None) -> list[Document]:
    """A parsed input value on a state topic: Meta's body translated, or the gate's contract.

    contract: the topic's own contract, or WEBHOOK for the topic of Meta's bodies only.
    """
    if contract == WEBHOOK or looks_like_webhook(document):
        return translate(document, received_at, tenant, tenant_map)
    return [(contract, validate(contract, document))]


def load_tenant_map(text: str) -> dict[str, str]:
    """The tenant map file: {"waba:<WABA id>": tenant, "phone:<phone_number_id>": tenant}."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object of \"waba:<id>\" / \"phone:<id>\" -> tenant")
    for key, tenant in document.items():
        if not (key.startswith("waba:") or key.startswith("phone:")) or \
                not isinstance(tenant, str) or not tenant:
            raise ValueError(f"entry {key!r}: keys are waba:<id> or phone:<id>, "
                             "values non-empty tenant ids")
    return dict(document)


def translate(body: Any, received_at: float, tenant: str | None = None,
              tenant_map: Mapping[str, str] | None = None) -> list[Document]:
    """Every state document a webhook body carries, in body order.

    received_at: when the body was received (the Kafka record time); the time of a template
    change when neither the entry's "time" nor the change says when. tenant: the record's
    tenant_id header, which wins over tenant_map.
    """
    if not isinstance(body, dict) or body.get("object") != OBJECT:
        raise DecodeError("not_meta_webhook",
                          f"not a Meta webhook body: \"object\" is not \"{OBJECT}\"")
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise DecodeError("not_meta_webhook", "not a Meta webhook body: \"entry\" is not a list")
    documents: list[Document] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            raise DecodeError("not_meta_webhook", f"entry[{index}] has no list of changes")
        entry_time = _seconds(entry.get("time"))
        for number, change in enumerate(entry["changes"]):
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                raise DecodeError("not_meta_webhook",
                                  f"entry[{index}].changes[{number}] has no value object")
            field, value = change.get("field"), change["value"]
            if field not in _FIELDS:
                continue  # a field the gate does not use
            owner = tenant or _mapped_tenant(tenant_map or {}, entry.get("id"), value)
            if owner is None:
                raise DecodeError("no_tenant", (
                    f"entry[{index}] names no tenant: no {TENANT_HEADER} record header and "
                    "neither its WABA id nor its phone_number_id is in the tenant map"))
            at = entry_time if entry_time is not None else received_at
            documents.extend(_FIELDS[field](value, owner, at))
    for contract, document in documents:
        if contract in STATE_CONTRACTS:
            validate(contract, document)
    return documents


def _mapped_tenant(tenant_map: Mapping[str, str], waba_id: Any, value: dict[str, Any]
                   ) -> str | None:
    metadata = value.get("metadata")
    phone_id = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    if phone_id is not None and f"phone:{phone_id}" in tenant_map:
        return tenant_map[f"phone:{phone_id}"]
    if waba_id is not None:
        return tenant_map.get(f"waba:{waba_id}")
    return None


def _seconds(value: Any) -> float | None:
    """Meta's Unix timestamps: seconds as a string ("1700000000") or an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    return None


def _timestamp(item: dict[str, Any], where: str) -> str:
    seconds = _seconds(item.get("timestamp"))
    if seconds is None:
        raise DecodeError("not_meta_webhook", f"{where} has no Unix timestamp")
    return format_rfc3339(seconds)


def _items(value: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    items = value.get(name)
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, dict))


def _user(phone: Any, user_id: Any, parent_user_id: Any) -> dict[str, str] | None:
    """Who an event is about: {field: value} with the phone number as the primary identity
    when Meta gave it (the BSUIDs then link to it), else the BSUID, else the parent BSUID.
    Since 2026 Meta may omit the number of a user who has a username (business-scoped user
    IDs); None when the event names nobody."""
    ids = {name: str(value) for name, value in (("primary", phone), ("user_id", user_id),
                                                ("parent_user_id", parent_user_id))
           if isinstance(value, str | int) and not isinstance(value, bool) and str(value)}
    if "primary" in ids:
        return ids
    primary = ids.get("user_id") or ids.get("parent_user_id")
    return {"primary": primary} if primary else None


def _named(document: dict[str, Any], field: str, user: dict[str, str]) -> dict[str, Any]:
    document[field] = user["primary"]
    for name in ("user_id", "parent_user_id"):
        if name in user:
            document[name] = user[name]
    return document


def _messages(value: dict[str, Any], tenant: str, _: float) -> Iterator[Document]:
    contacts = {str(c.get("wa_id")): c for c in _items(value, "contacts") if "wa_id" in c}
    for status in _items(value, "statuses"):
        user = _user(status.get("recipient_id"), status.get("recipient_user_id"),
                     status.get("recipient_parent_user_id"))
        if status.get("status") not in DELIVERY_STATUSES or user is None:
            continue  # e.g. a group message status, or a status the gate has no use for
        errors = [{"code": error["code"], **({"title": error["title"]}
                                             if isinstance(error.get("title"), str) else {})}
                  for error in status.get("errors") or () if isinstance(error, dict)
                  and isinstance(error.get("code"), int) and not isinstance(error["code"], bool)]
        document: dict[str, Any] = _named({
            "tenant_id": tenant, "status": status["status"],
            "timestamp": _timestamp(status, "a status"), "errors": errors}, "recipient", user)
        if isinstance(status.get("id"), str):
            document["message_id"] = status["id"]
        pricing = status.get("pricing")
        category = pricing.get("category") if isinstance(pricing, dict) else None
        if isinstance(category, str) and category.upper() in PRICED_CATEGORIES:
            document["category"] = category.upper()
        yield "delivery_status", document
    for message in _items(value, "messages"):
        if message.get("type") == "system":
            yield from _number_change(message, tenant)
            continue
        contact = contacts.get(str(message.get("from")), {})
        user = _user(message.get("from"), message.get("from_user_id") or contact.get("user_id"),
                     message.get("from_parent_user_id") or contact.get("parent_user_id"))
        if user is None:
            continue
        inbound: dict[str, Any] = _named({"tenant_id": tenant,
                                          "timestamp": _timestamp(message, "a message")},
                                         "sender", user)
        referral = message.get("referral")
        if isinstance(referral, dict):
            source_type = referral.get("source_type")
            inbound["referral"] = {"source_type": source_type} \
                if isinstance(source_type, str) else {}
        yield "inbound_message", inbound


def _number_change(message: dict[str, Any], tenant: str) -> Iterator[Document]:
    """Meta's system messages webhook reference (updated Aug 11, 2026): type
    ``user_changed_number``, ``from`` the old number, ``system.wa_id`` the new one; Meta's
    changelog (Aug 11, 2026) adds ``system.previous_user_id`` and
    ``system.previous_parent_user_id`` (a phone change regenerates the BSUID). One whose
    numbers are missing or not valid is dead-lettered: the user's identities would be guessed.
    ``user_changed_user_id`` and any other system type are skipped (see the README)."""
    system = message.get("system")
    if not isinstance(system, dict) or system.get("type") != "user_changed_number":
        return
    numbers = []
    for where, raw in (("from", message.get("from")), ("system.wa_id", system.get("wa_id"))):
        parsed = parse_recipient(str(raw)) if isinstance(raw, str | int) \
            and not isinstance(raw, bool) else None
        if parsed is None or not parsed.valid or parsed.kind != PHONE \
                or parsed.identity is None:
            raise DecodeError("schema_invalid", f"a user_changed_number system message whose "
                              f"{where} is {'missing' if raw is None else 'not a phone number'}")
        numbers.append(parsed.identity)
    change: dict[str, Any] = {"tenant_id": tenant, "sender": numbers[1],
                              "previous_number": numbers[0], "channel": "system",
                              "timestamp": _timestamp(message, "a system message")}
    for name in ("user_id", "parent_user_id", "previous_user_id", "previous_parent_user_id"):
        if isinstance(system.get(name), str) and system[name]:
            change[name] = system[name]
    yield "inbound_message", change


def _calls(value: dict[str, Any], tenant: str, _: float) -> Iterator[Document]:
    # Meta's "Service messages" page: when a WhatsApp user messages or calls the business, the
    # customer service window starts. The connect webhook of a user-initiated call comes when
    # the user places it, answered or missed; terminate of the same call adds nothing (taking
    # its time would stretch the window by the call's length), and a business-initiated call
    # opens no window.
    contacts = {str(c.get("wa_id")): c for c in _items(value, "contacts") if "wa_id" in c}
    for call in _items(value, "calls"):
        if call.get("event") != "connect" or \
                str(call.get("direction", "")).upper() != "USER_INITIATED":
            continue
        contact = contacts.get(str(call.get("from")), {})
        user = _user(call.get("from"), call.get("from_user_id") or contact.get("user_id"),
                     call.get("from_parent_user_id") or contact.get("parent_user_id"))
        if user is None:
            continue
        yield "inbound_message", _named({"tenant_id": tenant, "channel": "call",
                                         "timestamp": _timestamp(call, "a call")},
                                        "sender", user)


def _user_preferences(value: dict[str, Any], tenant: str, _: float) -> Iterator[Document]:
    for item in _items(value, "user_preferences"):
        user = _user(item.get("wa_id"), item.get("user_id"), item.get("parent_user_id"))
        if item.get("category") != "marketing_messages" or item.get("value") not in PREFERENCES \
                or user is None:
            continue
        yield "user_preference", _named({"tenant_id": tenant, "preference": item["value"],
                                         "timestamp": _timestamp(item, "a user preference")},
                                        "recipient", user)


def _template(value: dict[str, Any], tenant: str) -> dict[str, Any] | None:
    name, language = value.get("message_template_name"), value.get("message_template_language")
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        return None
    return {"tenant_id": tenant, "name": name, "language": language}


def _template_status(value: dict[str, Any], tenant: str, at: float) -> Iterator[Document]:
    template = _template(value, tenant)
    status = TEMPLATE_STATUSES.get(str(value.get("event")))
    if template is None or status is None:
        return
    update = {**template, "status": status, "updated_at": format_rfc3339(at)}
    if value.get("message_template_category") in CATEGORIES:
        update["category"] = value["message_template_category"]
    yield TEMPLATE_UPDATE, update


def _template_category(value: dict[str, Any], tenant: str, at: float) -> Iterator[Document]:
    template = _template(value, tenant)
    if template is None:
        return
    if value.get("new_category") in CATEGORIES:  # current category (impending) or the new one
        yield TEMPLATE_UPDATE, {**template, "category": value["new_category"],
                                "updated_at": format_rfc3339(at)}
    due = _seconds(value.get("category_update_timestamp"))
    if value.get("correct_category") in CATEGORIES and due is not None:
        yield TEMPLATE_UPDATE, {**template, "category": value["correct_category"],
                                "updated_at": format_rfc3339(due)}


def _limit(raw: Any) -> tuple[bool, int | None]:
    """(known, limit) of one of Meta's limit values: a TIER_… name, or an integer (also as a
    string) with -1 for unlimited. Anything else is not known: better no limit than a guess."""
    if isinstance(raw, str):
        if raw in LIMIT_TIERS:
            return True, LIMIT_TIERS[raw]
        text = raw.strip()
        if not (text.isdigit() or text == "-1"):
            return False, None
        raw = int(text)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw == -1:
            return True, None
        if raw >= 1:
            return True, raw
    return False, None


def _messaging_limit(field: str, raw: Any, tenant: str, at: float) -> Iterator[Document]:
    known, limit = _limit(raw)
    if known:
        yield MESSAGING_LIMIT, {"tenant_id": tenant, "limit": limit,
                                "updated_at": format_rfc3339(at), "source": field}


def _business_capability(value: dict[str, Any], tenant: str, at: float) -> Iterator[Document]:
    # Meta's business_capability_update reference (updated 2026-05-21):
    # max_daily_conversations_per_business, "Integer", values TIER_250 ... TIER_UNLIMITED, its
    # own example 2000; Meta's "Messaging limits" page: webhooks v23.0 and older carry the new
    # limit in max_daily_conversation_per_phone instead (250 ... 100000, -1 unlimited) until
    # February 2026.
    raw = value.get("max_daily_conversations_per_business")
    if raw is None:
        raw = value.get("max_daily_conversation_per_phone")
    yield from _messaging_limit("business_capability_update", raw, tenant, at)


def _quality_update(value: dict[str, Any], tenant: str, at: float) -> Iterator[Document]:
    # Meta's phone_number_quality_update reference (updated 2026-05-21):
    # max_daily_conversations_per_business (the portfolio's limit, a TIER_… string), else the
    # older current_limit. On a THROUGHPUT_UPGRADE event TIER_UNLIMITED means the number's
    # higher throughput (Meta's own example), not an unlimited messaging limit: not taken,
    # which would switch the rule off.
    raw = value.get("max_daily_conversations_per_business")
    if raw is None:
        raw = value.get("current_limit")
    if value.get("event") == "THROUGHPUT_UPGRADE" and raw == "TIER_UNLIMITED":
        return
    yield from _messaging_limit("phone_number_quality_update", raw, tenant, at)


_FIELDS = {
    "messages": _messages,
    "user_preferences": _user_preferences,
    "calls": _calls,
    "message_template_status_update": _template_status,
    "template_category_update": _template_category,
    "business_capability_update": _business_capability,
    "phone_number_quality_update": _quality_update,
}


def template_list_entries(text: str, tenant: str, updated_at: float
                          ) -> tuple[list[dict[str, Any]], list[str]]:
    """Meta's template-list response (one page, or several concatenated) -> catalog entries.

    Returns (template_entry documents, what was skipped and why). A template whose status or
    category the catalog has no value for is skipped, not guessed.
    """
    decoder = json.JSONDecoder()
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    position, page = 0, 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            break
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ValueError(f"page {page + 1} is not JSON: {exc}") from exc
        page += 1
        pages = document if isinstance(document, list) else [document]
        for item in pages:
            if not isinstance(item, dict) or not isinstance(item.get("data"), list):
                raise ValueError(f"page {page}: expected {{\"data\": [...], \"paging\": ...}}")
            for template in item["data"]:
                entry, problem = _list_entry(template, tenant, updated_at)
                if entry is not None:
                    entries.append(validate("template_entry", entry))
                else:
                    skipped.append(problem)
    return entries, skipped


def _list_entry(template: Any, tenant: str, updated_at: float
                ) -> tuple[dict[str, Any] | None, str]:
    if not isinstance(template, dict):
        return None, "a data item that is not an object"
    name, language = template.get("name"), template.get("language")
    label = f"{name}:{language}"
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        return None, f"{label}: no name or language"
    status = TEMPLATE_STATUSES.get(str(template.get("status")))
    if status is None:
        return None, f"{label}: status {template.get('status')!r} has no catalog equivalent"
    if template.get("category") not in CATEGORIES:
        return None, f"{label}: category {template.get('category')!r} is not one of " \
                     f"{', '.join(sorted(CATEGORIES))}"
    return {"tenant_id": tenant, "name": name, "language": language,
            "category": template["category"], "status": status,
            "updated_at": format_rfc3339(updated_at)}, ""
