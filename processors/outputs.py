"""The gate's output records (DESIGN §3): accepted, rejection, dead letter. Pure."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from processors.policy import Decision, Enrichment
from processors.timeutil import format_rfc3339

SCHEMA_VERSION = 1


def output_key(message: dict[str, Any], enrichment: Enrichment) -> str:
    """tenant_id:recipient_e164 (the raw recipient when it is not a valid number)."""
    return f"{message['tenant_id']}:{enrichment.recipient.e164 or message['recipient']}"


def _policy_ref(decision: Decision) -> dict[str, Any]:
    return {"id": decision.policy_id, "version": decision.policy_version,
            "monitored": list(decision.monitored)}


def accepted(message: dict[str, Any], enrichment: Enrichment, decision: Decision,
             decided_at: float) -> dict[str, Any]:
    return {**message, "enrichment": enrichment.as_dict(), "policy": _policy_ref(decision),
            "decided_at": format_rfc3339(decided_at)}


def rejection(message: dict[str, Any], enrichment: Enrichment, decision: Decision,
              decided_at: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "message_id": message["message_id"],
        "tenant_id": message["tenant_id"],
        "error_code": decision.error_code,
        "meta_error_code": decision.meta_error_code,
        "reason": decision.reason,
        "retryable": decision.retryable,
        "retry_after": format_rfc3339(decision.retry_after) if decision.retry_after else None,
        "billable": False,
        "violations": list(decision.violations),
        "policy": _policy_ref(decision),
        "enrichment": enrichment.as_dict(),
        "message": message,
        "decided_at": format_rfc3339(decided_at),
    }


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                reason: str, error: str, failed_at: float,
                headers: Any = None) -> dict[str, Any]:
    """headers: the record's (name, bytes) pairs; kept so that a replay re-attaches them."""
    try:
        text_key = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        text_key = None
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    kept = {str(name): None if raw is None else
            (raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw))
            for name, raw in pairs}
    return {
        "schema_version": SCHEMA_VERSION,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": text_key,
        "value_base64": base64.b64encode(value).decode("ascii") if value is not None else None,
        "reason": reason,
        "error": error,
        "failed_at": format_rfc3339(failed_at),
        "headers": kept or None,
    }
