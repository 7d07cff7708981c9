"""The policy in force switches on each valid document and stays on an invalid one."""

from __future__ import annotations

import json
import logging

import pytest

from processors.core.policy import load_policy
from processors.runtime.policy_feed import PolicyHolder


def document(version: str) -> bytes:
    doc = json.loads(json.dumps(dict(load_policy().document)))
    doc["version"] = version
    return json.dumps(doc).encode()


def test_switches_to_each_valid_version(caplog: pytest.LogCaptureFixture) -> None:
    holder = PolicyHolder(load_policy())
    caplog.set_level(logging.INFO)
    assert holder.offer(document("2"), "policy:0@0")
    assert holder.current.version == "2"
    assert "policy in force: meta-whatsapp-default version 2" in caplog.text


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"id": "x", "version": "3"}', None])
def test_invalid_or_tombstone_keeps_the_policy(raw: bytes | None,
                                               caplog: pytest.LogCaptureFixture) -> None:
    holder = PolicyHolder(load_policy())
    before = holder.current
    assert not holder.offer(raw, "policy:0@7")
    assert holder.current is before
    assert "policy:0@7" in caplog.text and before.version in caplog.text
