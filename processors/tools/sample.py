"""A small, realistic sample for `make run`: a catalog and messages that exercise the rules."""

from __future__ import annotations

from typing import Any

from processors.core.timeutil import format_rfc3339

TENANT = "acme-helpdesk"
BR_BSUID = "BR.1502576394655843"
CO_BSUID = "CO.8807123405566778"  # the Colombian user's, linked to +57 300 123 4567
MX_BSUID = "MX.4410099887766551"  # the Mexican user's, linked to +52 55 1234 0002


def catalog(now: float) -> list[dict[str, Any]]:
    at = format_rfc3339(now - 3600)
    rows = [
        ("spring_sale", "MARKETING", "APPROVED"),
        ("order_update", "UTILITY", "APPROVED"),
        ("login_code", "AUTHENTICATION", "APPROVED"),
        # Declared UTILITY by senders, re-categorized by Meta (template_category_update).
        ("renewal_reminder", "MARKETING", "APPROVED"),
        ("old_promo", "MARKETING", "DISABLED"),
        ("low_quality_promo", "MARKETING", "PAUSED"),
        ("new_offer", "MARKETING", "PENDING"),
        # Unused for 12 months: Meta archived it (Template archival, 2026).
        ("winter_promo", "MARKETING", "ARCHIVED"),
    ]
    return [{"tenant_id": TENANT, "name": name, "language": "en_US", "category": category,
             "status": status, "updated_at": at} for name, category, status in rows]


# (label, recipient, recipient_region, kind, template, declared category, origin)
_MESSAGES: list[tuple[str, str, str | None, str, str | None, str | None, str]] = [
    ("US marketing", "+12025550143", None, "template", "spring_sale", None, "automation"),
    ("US utility", "+12025550143", None, "template", "order_update", None, "agent"),
    ("US authentication", "12025550178", None, "template", "login_code", None, "api"),
    ("US toll-free marketing", "+18005550199", None, "template", "spring_sale", None, "api"),
    ("Canada marketing", "+14165550123", None, "template", "spring_sale", None, "automation"),
    ("Canada wa_id marketing", "14165550188", None, "template", "spring_sale", None, "api"),
    ("Puerto Rico marketing", "+17875550123", None, "template", "spring_sale", None, "api"),
    ("UK national marketing", "07400123456", "GB", "template", "spring_sale", None, "agent"),
    ("Brazil marketing", "+5511912345678", None, "template", "spring_sale", None, "automation"),
    ("India utility", "+919812345678", None, "template", "order_update", None, "agent"),
    ("Mexico recategorized", "+525512345678", None, "template", "renewal_reminder", "UTILITY",
     "automation"),
    ("Germany unknown template", "+4915123456789", None, "template", "unlisted", None, "api"),
    ("Germany unknown, declared", "+4915123456790", None, "template", "unlisted_2", "UTILITY",
     "api"),
    ("Brazil bulk marketing", "+5511912345679", None, "template", "spring_sale", None, "bulk"),
    ("India mass-action utility", "+919812345679", None, "template", "order_update", None,
     "mass_action"),
    ("Spain disabled template", "+34612345678", None, "template", "old_promo", None, "api"),
    ("France paused template", "+33612345678", None, "template", "low_quality_promo", None,
     "api"),
    ("Italy pending template", "+393123456789", None, "template", "new_offer", None, "api"),
    ("Cuba utility", "+5352345678", None, "template", "order_update", None, "agent"),
    ("Iran utility", "+989123456789", None, "template", "order_update", None, "agent"),
    ("Invalid number", "+1202555", None, "template", "order_update", None, "agent"),
    ("Brazil free-form (no window)", "+5511912345680", None, "free_form", None, None, "agent"),
    ("Nigeria authentication", "+2348031234567", None, "template", "login_code", None, "api"),
    ("Indonesia marketing", "+6281234567890", None, "template", "spring_sale", None, "api"),
    # These recipients have state (state_events below).
    ("Colombia free-form (wrote 1 h ago)", "+573001234567", None, "free_form", None, None,
     "agent"),
    ("Brazil marketing after 131049", "+5511987650001", None, "template", "spring_sale", None,
     "automation"),
    ("Mexico marketing after stop", "+525512340002", None, "template", "spring_sale", None,
     "automation"),
    ("Mexico utility after stop", "+525512340002", None, "template", "order_update", None,
     "agent"),
    ("Germany archived template", "+4915123456791", None, "template", "winter_promo", None,
     "api"),
    # Meta's business-scoped user IDs (2026): a user known by BSUID, region from the prefix.
    ("Brazil user by BSUID, utility", BR_BSUID, None, "template", "order_update", None, "agent"),
    ("Brazil user by BSUID, login code", BR_BSUID, None, "template", "login_code", None, "api"),
    ("US user by BSUID, marketing", "US.13491208655302741918", None, "template", "spring_sale",
     None, "automation"),
    # Linked to a number by the state events below: the number's state applies.
    ("Colombia BSUID free-form (number wrote)", CO_BSUID, None, "free_form", None, None, "agent"),
    ("Mexico BSUID marketing (number stopped)", MX_BSUID, None, "template", "spring_sale", None,
     "automation"),
]


def state_events(now: float) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic field of Topics, recipient, value): an inbound message, a 131049, an opt-out. The
    inbound message and the opt-out also name the user's BSUID (Meta's webhooks do since 2026),
    which links the two identities."""
    hour_ago = format_rfc3339(now - 3600)
    return [
        ("inbound", "573001234567",
         {"tenant_id": TENANT, "sender": "573001234567", "user_id": CO_BSUID,
          "timestamp": hour_ago}),
        ("statuses", "5511987650001",
         {"tenant_id": TENANT, "recipient": "5511987650001", "status": "failed",
          "timestamp": hour_ago, "errors": [{"code": 131049, "title": "healthy ecosystem"}]}),
        ("preferences", "525512340002",
         {"tenant_id": TENANT, "recipient": "525512340002", "user_id": MX_BSUID,
          "preference": "stop", "timestamp": hour_ago}),
    ]


def messages(now: float, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, outbound message) pairs; message ids are unique per run."""
    created = format_rfc3339(now)
    out = []
    for index, (label, recipient, region, kind, template, declared, origin) in enumerate(
        _MESSAGES, start=1
    ):
        message: dict[str, Any] = {
            "schema_version": 1,
            "message_id": f"demo-{run_id}-{index:02d}",
            "tenant_id": TENANT,
            "recipient": recipient,
            "kind": kind,
            "origin": origin,
            "created_at": created,
            "context": {"ticket_id": f"T-{1000 + index}"},
        }
        if region:
            message["recipient_region"] = region
        if template:
            message["template"] = {"name": template, "language": "en_US"}
            if declared:
                message["template"]["category"] = declared
        out.append((label, message))
    return out


# Not JSON, and JSON that breaks the contract: both must reach the dead-letter topic.
MALFORMED: list[bytes] = [b"{not json", b'{"message_id": "broken", "kind": "carrier-pigeon"}']
