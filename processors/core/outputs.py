"""The gate's output records (DESIGN §3): accepted, rejection, dead letter. Pure."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from processors.core.policy import Decision, Enrichment
from processors.core.timeutil import format_rfc3339

SCHEMA_VERSION = 1
# A dead letter must fit in one Kafka record: 1 MB by default at the broker and the producer
# (key included), and base64 makes the raw value 4/3 of its size. Without these limits, an
# undecodable input near the broker's limit (or over OUTBOUND_GATE_MAX_MESSAGE_BYTES but under
# the broker's) made a dead letter too large to send, and the route agent crashed on
# MessageSizeTooLargeError. What does not fit is cut, and the letter's error says so.
DEAD_LETTER_MAX_BYTES = 900_000
DEAD_LETTER_KEY_MAX_BYTES = 16_384


def output_key(message: dict[str, Any], enrichment: Enrichment) -> str:
    """tenant_id:identity: the E.164 number or the BSUID (the raw recipient when invalid)."""
    return f"{message['tenant_id']}:{enrichment.recipient.identity or message['recipient']}"


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


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key a dead letter keeps (as its record key and its `key`): none when too long."""
    return key if key is None or len(key) <= DEAD_LETTER_KEY_MAX_BYTES else None


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                reason: str, error: str, failed_at: float,
                headers: Any = None, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> dict[str, Any]:
    """The dead letter of an input record; with its key, at most max_bytes as JSON.

    headers: the record's (name, bytes) pairs; kept so that a replay re-attaches them."""
    kept_key = dead_letter_key(key)
    if key is not None and kept_key is None:
        error += f" (the key of {len(key)} bytes is not kept)"
    try:
        text_key = kept_key.decode("utf-8") if kept_key is not None else None
    except UnicodeDecodeError:
        text_key = None
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    kept = {str(name): None if raw is None else
            (raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw))
            for name, raw in pairs}
    letter = {
        "schema_version": SCHEMA_VERSION,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": text_key,
        "value_base64": None,
        "reason": reason,
        "error": error,
        "failed_at": format_rfc3339(failed_at),
        "headers": kept or None,
    }
    if value is None:
        return letter
    # Room for the base64 text: the budget less the rest of the letter, the record key and a
    # margin for the note below.
    room = max_bytes - len(orjson.dumps(letter)) - len(kept_key or b"") - 200
    if len(value) * 4 // 3 + 4 > room:
        keep = max(0, room) // 4 * 3
        letter["error"] = error + (f" (value_base64 holds the first {keep} of the value's "
                                   f"{len(value)} bytes: all of it would not fit in a dead letter)")
        value = value[:keep]
    letter["value_base64"] = base64.b64encode(value).decode("ascii")
    return letter
