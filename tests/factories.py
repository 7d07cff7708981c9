"""Builders of contract documents for tests: a valid default, overridden per test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processors.core.policy import PolicySet

NOW = "2026-11-26T12:00:00Z"


def message(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "message_id": "m-1",
        "tenant_id": "acme",
        "recipient": "+14165550123",
        "kind": "template",
        "template": {"name": "promo", "language": "en_US"},
        "origin": "api",
        "created_at": NOW,
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def template_entry(name: str = "promo", category: str = "MARKETING", status: str = "APPROVED",
                   updated_at: str = "2026-01-01T00:00:00Z", tenant_id: str = "acme",
                   language: str = "en_US") -> dict[str, Any]:
    return {"tenant_id": tenant_id, "name": name, "language": language, "category": category,
            "status": status, "updated_at": updated_at}


def status(recipient: str, code: int | None, timestamp: str, tenant_id: str = "acme",
           state: str = "failed") -> dict[str, Any]:
    return {"tenant_id": tenant_id, "recipient": recipient, "status": state,
            "timestamp": timestamp, "errors": [{"code": code}] if code else []}


def inbound(sender: str, timestamp: str, tenant_id: str = "acme") -> dict[str, Any]:
    return {"tenant_id": tenant_id, "sender": sender, "timestamp": timestamp}


def preference(recipient: str, value: str, timestamp: str,
               tenant_id: str = "acme") -> dict[str, Any]:
    return {"tenant_id": tenant_id, "recipient": recipient, "preference": value,
            "timestamp": timestamp}


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def meta_body(name: str) -> dict[str, Any]:
    """A Meta webhook body from tests/fixtures/meta_webhook/, shaped as Meta documents it."""
    body: dict[str, Any] = json.loads((FIXTURES / "meta_webhook" / f"{name}.json").read_text())
    return body


def policy_document(**changes: Any) -> dict[str, Any]:
    """The packaged policy document with changes: a path of keys joined by __ -> its value,
    e.g. parameters__messaging_limit=10 or rules__MESSAGING_LIMIT_REACHED__mode="monitor"."""
    from processors.core.policy import load_policy

    document: dict[str, Any] = json.loads(json.dumps(dict(load_policy().document)))
    for path, value in changes.items():
        target = document
        keys = path.split("__")
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return document


def policy_with(**changes: Any) -> PolicySet:
    """The packaged policy set with changes (policy_document's paths)."""
    from processors.core.policy import parse_policy

    return parse_policy(policy_document(**changes))
