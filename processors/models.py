"""Faust records mirroring the JSON Schemas in schemas/ (a test keeps the two in step).

The worker decodes and validates raw bytes itself (so that bad input can be dead-lettered);
these records give the shell typed access to the contracts.
"""

from __future__ import annotations

from typing import Any

import faust


class _Contract(faust.Record, include_metadata=False, serializer="json"):
    pass


class TemplateRef(_Contract):
    name: str
    language: str
    category: str | None = None


class OutboundMessage(_Contract):
    message_id: str
    tenant_id: str
    recipient: str
    kind: str
    created_at: str
    schema_version: int = 1
    recipient_region: str | None = None
    business_number: str | None = None
    template: TemplateRef | None = None
    origin: str = "api"
    scheduled_at: str | None = None
    context: dict[str, Any] | None = None


class TemplateEntry(_Contract):
    tenant_id: str
    name: str
    language: str
    category: str
    status: str
    updated_at: str


class DeliveryError(_Contract):
    code: int
    title: str | None = None


class DeliveryStatus(_Contract):
    tenant_id: str
    recipient: str
    status: str
    timestamp: str
    errors: list[DeliveryError]
    message_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None


class Referral(_Contract):
    source_type: str | None = None


class InboundMessage(_Contract):
    tenant_id: str
    sender: str
    timestamp: str
    referral: Referral | None = None
    user_id: str | None = None
    parent_user_id: str | None = None


class UserPreference(_Contract):
    tenant_id: str
    recipient: str
    preference: str
    timestamp: str
    user_id: str | None = None
    parent_user_id: str | None = None


class Enrichment(_Contract):
    recipient_e164: str | None
    recipient_kind: str | None
    recipient_region: str | None
    calling_code: int | None
    number_type: str | None
    template_category: str | None
    category_source: str | None


class PolicyRef(_Contract):
    id: str
    version: str
    monitored: list[str] | None = None


class Rejection(_Contract):
    schema_version: int
    message_id: str
    tenant_id: str
    error_code: str
    meta_error_code: int | None
    reason: str
    retryable: bool
    retry_after: str | None
    billable: bool
    violations: list[str]
    policy: PolicyRef
    enrichment: Enrichment
    message: dict[str, Any]
    decided_at: str


class DeadLetter(_Contract):
    schema_version: int
    topic: str
    partition: int
    offset: int
    key: str | None
    value_base64: str | None
    reason: str
    error: str
    failed_at: str
    headers: dict[str, str | None] | None = None


# Record -> the schemas/ contract it mirrors.
CONTRACTS: dict[type[faust.Record], str] = {
    OutboundMessage: "outbound_message",
    TemplateEntry: "template_entry",
    DeliveryStatus: "delivery_status",
    InboundMessage: "inbound_message",
    UserPreference: "user_preference",
    Enrichment: "enrichment",
    Rejection: "rejection",
    DeadLetter: "dead_letter",
}
