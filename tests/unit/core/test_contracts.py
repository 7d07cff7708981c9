"""schemas/: every example validates as labelled, and the Faust records match the schemas."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from processors.core import contracts, decode, outputs
from processors.core.policy import EMPTY, decide, enrich, load_policy
from tests.factories import message

EXAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "examples"
CASES = sorted(EXAMPLES.glob("*/*/*.json"))


def test_there_are_examples_for_every_wire_contract() -> None:
    covered = {path.parts[-3] for path in CASES}
    assert covered == set(contracts.SCHEMA_FILES) - {"policy"}
    for contract in covered:
        assert list((EXAMPLES / contract / "valid").glob("*.json")), contract
        assert list((EXAMPLES / contract / "invalid").glob("*.json")), contract


@pytest.mark.parametrize("name", sorted(contracts.SCHEMA_FILES))
def test_schemas_are_valid_2020_12(name: str) -> None:
    document = contracts.schema(name)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)


@pytest.mark.parametrize("path", CASES, ids=lambda p: "/".join(p.parts[-3:]))
def test_example(path: Path) -> None:
    contract, label = path.parts[-3], path.parts[-2]
    error = contracts.first_error(contract, json.loads(path.read_text()))
    if label == "valid":
        assert error is None, error
    else:
        assert error is not None, f"{path.name} should be invalid"


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def test_produced_records_validate() -> None:
    policy = load_policy()
    for doc in (message(recipient="+12025550143"), message(recipient="+14165550123")):
        enrichment = enrich(doc, None)
        decision = decide(doc, enrichment, EMPTY, None, policy.base, 1.8e9)
        build = outputs.accepted if decision.accepted else outputs.rejection
        record = build(doc, enrichment, decision, 1.8e9)
        contract = "accepted_message" if decision.accepted else "rejection"
        assert contracts.first_error(contract, record) is None
        if not decision.accepted:
            assert record["error_code"] == "MARKETING_PAUSED_US"
    letter = outputs.dead_letter("t", 0, 5, b"k", b"\xff", "not_utf8", "bad", 1.8e9)
    assert contracts.first_error("dead_letter", letter) is None
    assert letter["value_base64"] == "/w=="


@pytest.mark.parametrize(("raw", "reason"), [
    (None, "empty"),
    (b"", "empty"),
    (b"\xff\xfe{}", "not_utf8"),
    # Inside an otherwise valid document: overlong, surrogate, past U+10FFFF, truncated.
    (b'{"message_id": "\xc0\xaf"}', "not_utf8"),
    (b'{"message_id": "\xed\xa0\x80"}', "not_utf8"),
    (b'{"message_id": "\xf4\x90\x80\x80"}', "not_utf8"),
    (b'{"message_id": "\xe2\x82"}', "not_utf8"),
    (b"\xef\xbb\xbf{}", "not_json"),  # a byte-order mark is UTF-8, not JSON
    (b"{nope", "not_json"),
    (b"[1, 2]", "schema_invalid"),
    (b'"text"', "schema_invalid"),
    (b'{"message_id": "x"}', "schema_invalid"),
    (b"{" + b'"a": 1,' * 200_000 + b'"b": 2}', "too_large"),
])
def test_decode_errors_have_reasons(raw: bytes | None, reason: str) -> None:
    with pytest.raises(decode.DecodeError) as caught:
        decode.decode("outbound_message", raw)
    assert caught.value.reason == reason
    assert str(caught.value)


FAST_CASES = [path for path in CASES if contracts.fast_check(path.parts[-3]) is not None]


def test_input_contracts_have_fast_validators() -> None:
    fast = {path.parts[-3] for path in FAST_CASES}
    assert {"outbound_message", "template_entry", "delivery_status", "inbound_message",
            "user_preference"} <= fast


@pytest.mark.parametrize("path", FAST_CASES, ids=lambda p: "/".join(p.parts[-3:]))
def test_fast_validator_agrees_with_jsonschema(path: Path) -> None:
    contract = path.parts[-3]
    check = contracts.fast_check(contract)
    assert check is not None
    document = json.loads(path.read_text())
    slow_valid = not list(contracts.validator(contract).iter_errors(document))
    # is_valid returns the verdict; anything it raises (a format checker that fails) fails the
    # test rather than passing as a refusal.
    fast_valid = check.is_valid(document)
    assert fast_valid == slow_valid


def test_validation_leaves_the_document_as_sent() -> None:
    # A rejection carries "the original event, untouched": no schema default (origin "api") is
    # written into it by the check.
    document = {"message_id": "m1", "tenant_id": "t1", "recipient": "+14155550100",
                "kind": "free_form", "created_at": "2026-01-01T00:00:00Z"}
    sent = dict(document)
    assert decode.validate("outbound_message", document) == sent
    assert document == sent
