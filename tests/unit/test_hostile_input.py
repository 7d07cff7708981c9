"""Hostile input, property-based (hypothesis): whatever arrives, the gate decodes it or says why.

Properties, over arbitrary bytes, arbitrary JSON, mutated valid documents of every input
contract, odd Unicode, huge strings, deep nesting and numbers in every odd format:
  - decode() returns a valid document or raises DecodeError with a known reason and a message;
  - a decoded outbound message is always decided (accepted, or rejected with a known code,
    INVALID_RECIPIENT for a number that cannot be read), and its output record is valid JSON of
    its contract, as the worker writes it;
  - a decoded state event always updates state or is refused as a dead letter;
  - the offline check never crashes and gives each line at most one output (exactly one unless
    the line is a valid state event);
  - the hostile-input generator's expectations are what the core does with its records.
"""

from __future__ import annotations

import base64
import json
import string
import time
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from processors.core import contracts, decode, outputs
from processors.core.decode import DecodeError
from processors.core.enrich import parse_recipient
from processors.core.policy import EMPTY, decide, enrich, load_policy
from processors.core.policy.codes import RULE_CODES
from processors.core.policy.state import REDUCERS
from processors.core.policy.templates import merge
from processors.core.timeutil import format_rfc3339, is_rfc3339, parse_rfc3339
from processors.runtime.engine.records import Record
from processors.runtime.gate.processor import read_input
from processors.settings import Settings
from processors.tools.offline import OfflineCheck
from tests import hostile

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
INPUTS = ("outbound_message", "delivery_status", "inbound_message", "user_preference",
          "template_entry")
REASONS = frozenset(contracts.schema("dead_letter")["properties"]["reason"]["enum"])
POLICIES = load_policy()
NOW = parse_rfc3339("2026-11-26T12:00:00Z")
MAX = 65_536

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def valid_examples(contract: str) -> list[dict[str, Any]]:
    return [json.loads(path.read_text())
            for path in sorted((EXAMPLES / contract / "valid").glob("*.json"))]


# -- strategies --------------------------------------------------------------------------------
ODD_TEXT = st.lists(st.sampled_from([*hostile.ODD_UNICODE, *"a+1 -()"]), max_size=12).map(
    "".join) | st.text(max_size=30)
DIGIT_SCRIPTS = ("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
                 "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
                 "\u06f0\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6\u06f7\u06f8\u06f9",
                 "\u0966\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u096f")
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | ODD_TEXT
           | st.sampled_from(hostile.NON_STRING_RECIPIENTS))
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(ODD_TEXT, inner, max_size=4), max_leaves=20)


@st.composite
def odd_numbers(draw: st.DrawFn) -> str:
    """Phone-number-like text: digits of any script, separators, prefixes, exponents."""
    digits = draw(st.sampled_from(DIGIT_SCRIPTS))
    body = draw(st.text(alphabet=digits + " -().e+", min_size=1, max_size=40))
    prefix = draw(st.sampled_from(["", "+", "+1", "00", "001", "tel:", "-", "0", "++", "+1 ("]))
    return (prefix + body)[:64] or "0"


def encode(value: Any) -> bytes:
    """JSON text of any value, the stdlib way: big integers stay exact, NaN is written as NaN."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def encodings(value: Any) -> st.SearchStrategy[bytes]:
    return st.sampled_from([encode(value), json.dumps(value).encode()])


@st.composite
def mutated(draw: st.DrawFn, contract: str) -> dict[str, Any]:
    """A valid document with fields set to arbitrary values, removed, or added."""
    document = dict(draw(st.sampled_from(valid_examples(contract))))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "remove", "add", "wrong", "nested"]))
        name = draw(st.sampled_from(sorted(document) or ["x"]))
        if action == "set":
            document[name] = draw(JSON_VALUES)
        elif action == "remove":
            document.pop(name, None)
        elif action == "add":
            document[draw(ODD_TEXT)] = draw(JSON_VALUES)
        elif action == "wrong":
            fields = hostile.WRONG_VALUES[contract]
            field = draw(st.sampled_from(sorted(fields)))
            document[field] = draw(st.sampled_from(fields[field]))
        elif isinstance(document.get(name), dict):
            document[name] = {**document[name], draw(ODD_TEXT): draw(JSON_VALUES)}
    return document


# -- checks ------------------------------------------------------------------------------------
def decoded_or_reason(contract: str, raw: bytes | None, max_bytes: int = MAX) -> Any:
    """decode(), held to its promise: a valid document, or a DecodeError saying why."""
    try:
        document = decode.decode(contract, raw, max_bytes)
    except DecodeError as error:
        assert error.reason in REASONS, error.reason
        message = str(error)
        assert message and message.isprintable() and len(message) < 2_000, message
        return error
    assert isinstance(document, dict)
    assert contracts.first_error(contract, document) is None
    return document


def decide_live(document: dict[str, Any]) -> dict[str, Any]:
    """What the worker does with a decoded outbound message; the record it writes, checked."""
    enrichment = enrich(document, None)
    decision = decide(document, enrichment, EMPTY, None, POLICIES.for_tenant(
        document["tenant_id"]), NOW)
    if decision.accepted:
        record = outputs.accepted(document, enrichment, decision, NOW)
        assert contracts.first_error("accepted_message", record) is None
    else:
        assert decision.error_code in RULE_CODES
        assert decision.reason
        record = outputs.rejection(document, enrichment, decision, NOW)
        assert contracts.first_error("rejection", record) is None, record
    if not enrichment.recipient.valid:
        assert decision.error_code == "INVALID_RECIPIENT"
    outputs.output_key(document, enrichment).encode("utf-8")
    # The repartition envelope and the output record must serialise (orjson: <= 254 levels).
    orjson.dumps({"c": "outbound_message", "d": document})
    orjson.loads(orjson.dumps(record))
    return record


def apply_state(contract: str, document: dict[str, Any]) -> None:
    """What the worker does with a decoded state event: a dead letter or a state change."""
    if contract == "template_entry":
        merge(None, document)
        return
    reducer, field = REDUCERS[contract]
    if parse_recipient(document[field]).valid:
        reducer(EMPTY, document)


def through_core(contract: str, raw: bytes | None) -> None:
    result = decoded_or_reason(contract, raw)
    if isinstance(result, dict):
        if contract == "outbound_message":
            decide_live(result)
        else:
            apply_state(contract, result)


# -- properties --------------------------------------------------------------------------------
@FAST
@given(contract=st.sampled_from(INPUTS), raw=st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_say_why(contract: str, raw: bytes) -> None:
    through_core(contract, raw)


@FAST
@given(contract=st.sampled_from(INPUTS), data=st.data())
def test_arbitrary_json_decode_or_say_why(contract: str, data: st.DataObject) -> None:
    value = data.draw(JSON_VALUES)
    through_core(contract, data.draw(encodings(value)))


@FAST
@given(contract=st.sampled_from(INPUTS), data=st.data())
def test_mutated_documents_are_decided_or_dead_letters(contract: str,
                                                       data: st.DataObject) -> None:
    document = data.draw(mutated(contract))
    through_core(contract, data.draw(encodings(document)))


@FAST
@given(contract=st.sampled_from(INPUTS), data=st.data())
def test_fast_check_agrees_with_jsonschema(contract: str, data: st.DataObject) -> None:
    # The compiled check decides alone when it finds a document valid: it must never pass one
    # that jsonschema, the authority, refuses. It may refuse more (its patterns are ECMA-262's:
    # "$" does not match before a final newline); jsonschema then looks again, so the verdict
    # is always the authority's. Documents as the worker sees them: what orjson reads.
    try:
        document = orjson.loads(data.draw(encodings(data.draw(mutated(contract)))))
    except orjson.JSONDecodeError:
        assume(False)  # not JSON the worker reads (NaN, integers past 64 bits): no verdict
    check = contracts.fast_check(contract)
    assert check is not None
    authority = not list(contracts.validator(contract).iter_errors(document))
    assert authority or not check.is_valid(document), document
    assert (contracts.first_error(contract, document) is None) == authority, document


def test_a_refusal_of_the_fast_check_alone_is_not_final() -> None:
    document = {"message_id": "m1", "tenant_id": "t1", "recipient": "4155550100",
                "recipient_region": "US\n", "kind": "free_form",
                "created_at": "2026-01-01T00:00:00Z"}
    check = contracts.fast_check("outbound_message")
    assert check is not None and not check.is_valid(document)
    assert not list(contracts.validator("outbound_message").iter_errors(document))
    assert contracts.first_error("outbound_message", document) is None


@FAST
@given(recipient=odd_numbers() | ODD_TEXT.filter(bool),
       region=st.none() | st.sampled_from(["CA", "us", "ZZ", "GB", "Xx"]))
def test_odd_numbers_are_decided(recipient: str, region: str | None) -> None:
    document = hostile.example("outbound_message", recipient=recipient[:64])
    if region is not None:
        document["recipient_region"] = region
    result = decoded_or_reason("outbound_message", orjson.dumps(document))
    if isinstance(result, DecodeError):  # only a recipient the schema refuses
        assert result.reason == "schema_invalid"
        return
    record = decide_live(result)
    if not parse_recipient(result["recipient"], region).valid:
        assert record["error_code"] == "INVALID_RECIPIENT"


@pytest.mark.parametrize(("recipient", "region", "expect"), hostile.ODD_RECIPIENTS,
                         ids=[ascii(r[0])[:40] for r in hostile.ODD_RECIPIENTS])
def test_odd_number_formats(recipient: str, region: str | None, expect: str) -> None:
    document = hostile.example("outbound_message", recipient=recipient)
    if region:
        document["recipient_region"] = region
    record = decide_live(decode.decode("outbound_message", orjson.dumps(document)))
    assert record.get("error_code", "accepted") == expect.removeprefix("rejected:")


@pytest.mark.parametrize("value", hostile.NON_STRING_RECIPIENTS, ids=repr)
def test_numbers_that_are_not_strings_are_refused(value: Any) -> None:
    raw = encode(hostile.example("outbound_message", recipient=value))
    error = decoded_or_reason("outbound_message", raw)
    assert isinstance(error, DecodeError) and error.reason == "schema_invalid"


@pytest.mark.parametrize("token", hostile.BAD_NUMBER_TOKENS, ids=repr)
def test_numbers_json_does_not_allow_are_not_json(token: bytes) -> None:
    raw = orjson.dumps(hostile.example("outbound_message")).replace(
        b'"+14165550123"', token)
    error = decoded_or_reason("outbound_message", raw)
    assert isinstance(error, DecodeError) and error.reason == "not_json"


@pytest.mark.parametrize("depth", [1, 64, 65, 254, 255, 1_000, 1_024, 1_025, 10_000])
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    bare = decoded_or_reason("outbound_message", hostile.nested_bytes(depth))
    assert isinstance(bare, DecodeError)
    assert bare.reason == ("schema_invalid" if depth <= 1_024 else "not_json")
    # The same depth inside a valid message (the message object is one of the levels).
    raw = orjson.dumps(hostile.example("outbound_message"))[:-1] + b',"extra":' + \
        hostile.nested_bytes(max(0, depth - 1)) + b"}"
    result = decoded_or_reason("outbound_message", raw)
    if depth <= decode.MAX_DEPTH:
        decide_live(result)  # decided, and its output written
    else:
        assert isinstance(result, DecodeError)
        assert result.reason == ("schema_invalid" if depth <= 1_024 else "not_json")


def test_nesting_the_gate_accepts_can_be_written_back() -> None:
    """Regression: orjson reads 1,024 levels but writes only 254; outputs add levels."""
    document = hostile.example("outbound_message",
                               context={"deep": hostile.nested(decode.MAX_DEPTH - 2)})
    assert decode.depth(document) == decode.MAX_DEPTH
    record = decide_live(decode.decode("outbound_message", orjson.dumps(document)))
    assert orjson.dumps({"wrapper": {"c": "x", "d": record}})  # margin for envelopes


@FAST
@given(field=st.sampled_from(["message_id", "tenant_id", "recipient", "created_at", "note"]),
       size=st.integers(0, 200_000), char=st.sampled_from(["x", "\u00e9", "\U0001f600", "\\"]))
def test_huge_strings(field: str, size: int, char: str) -> None:
    raw = orjson.dumps(hostile.example("outbound_message", **{field: char * size}))
    result = decoded_or_reason("outbound_message", raw)
    if len(raw) > MAX:
        assert isinstance(result, DecodeError) and result.reason == "too_large"
    elif isinstance(result, dict):
        decide_live(result)


@pytest.mark.parametrize("raw", [None, b"", b" ", b"\n", b"\x00", b"null", b"{}", b"[]"],
                         ids=repr)
def test_empty_and_near_empty(raw: bytes | None) -> None:
    result = decoded_or_reason("outbound_message", raw)
    assert isinstance(result, DecodeError)
    assert result.reason == ("empty" if not raw else
                             "not_json" if raw.strip() in {b"", b"\x00"} else "schema_invalid")


@FAST
@given(moment=st.datetimes(timezones=st.timezones()), precision=st.sampled_from(
    ["seconds", "milliseconds", "microseconds"]))
def test_any_zoned_timestamp_reads_and_writes(moment: Any, precision: str) -> None:
    text = moment.isoformat(timespec=precision)
    try:
        moment.astimezone(UTC)
        in_range = True
    except OverflowError:  # the instant is outside years 1..9999 in UTC
        in_range = False
    # Read: every in-range zoned timestamp is RFC 3339, and only those.
    assert is_rfc3339(text) is in_range, text
    if not in_range:
        return
    epoch = parse_rfc3339(text)
    # Written back: RFC 3339 again, the same instant to the millisecond it keeps (a float's
    # precision in year 9999 is some 30 microseconds, hence 2 ms).
    written = format_rfc3339(epoch)
    assert is_rfc3339(written) and written.endswith("Z"), written
    assert abs(parse_rfc3339(written) - epoch) < 0.002, (text, written)
    for later in (epoch + 86_400, epoch - 86_400):  # e.g. a retry_after a day later: clamped
        assert is_rfc3339(format_rfc3339(later)), later


@FAST
@given(text=st.text(max_size=40) | st.sampled_from(
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-01-01T00:00:00",
     "2026-W01-1T00:00:00Z", "99999-01-01T00:00:00Z", "2026-01-01T00:00:00+25:00"]))
def test_timestamp_check_never_raises(text: str) -> None:
    if is_rfc3339(text):  # and what it accepts reads and writes back as the same instant
        epoch = parse_rfc3339(text)
        assert abs(parse_rfc3339(format_rfc3339(epoch)) - epoch) < 0.002, text


# -- the offline check -------------------------------------------------------------------------
STATE_TOPICS = {"whatsapp.statuses": "delivery_status", "whatsapp.inbound": "inbound_message",
                "whatsapp.user-preferences": "user_preference",
                "whatsapp.templates": "template_entry"}


@st.composite
def offline_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "outbound", "envelope", "odd_number"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return draw(encodings(draw(JSON_VALUES)))
    if kind == "outbound":
        return draw(encodings(draw(mutated("outbound_message"))))
    if kind == "odd_number":
        document = hostile.example("outbound_message", recipient=draw(odd_numbers()))
        return orjson.dumps(document)
    topic = draw(st.sampled_from([*STATE_TOPICS, "outbound.messages", "nope", 1, None]))
    contract = STATE_TOPICS.get(topic) if isinstance(topic, str) else None
    value = draw(mutated(contract) if contract else JSON_VALUES | mutated("outbound_message"))
    key = draw(st.none() | ODD_TEXT | st.integers())
    return draw(encodings({"topic": topic, "key": key, "value": value}))


@FAST
@given(lines=st.lists(offline_lines(), min_size=1, max_size=8))
def test_offline_check_gives_each_line_one_outcome(lines: list[bytes]) -> None:
    check = OfflineCheck(POLICIES, max_bytes=MAX)
    for number, raw in enumerate(lines, start=1):
        raw = raw.replace(b"\n", b" ").replace(b"\r", b" ")  # one line is one line
        if not raw.strip():
            continue
        result = check.line(number, raw)
        if result is None:  # applied a state event: only a valid envelope of a state topic
            envelope = orjson.loads(raw)
            assert envelope["topic"] in STATE_TOPICS, envelope
            continue
        orjson.dumps(result)  # the CLI writes it as a JSON line
        assert result["line"] == number
        if result["decision"] == "dead_letter":
            assert result["reason"] in REASONS and result["error"]
        else:
            assert result["decision"] in {"accepted", "rejected"}
            assert result["error_code"] is None or result["error_code"] in RULE_CODES


def test_offline_clock_at_the_end_of_time() -> None:
    """Regression: a clock or retry_after past 9999-12-31 made the offline check raise."""
    check = OfflineCheck(POLICIES)
    status = hostile.example("delivery_status", recipient="+14165550199",
                             timestamp="9999-12-31T23:00:00Z")  # a 131049 status
    message = hostile.example("outbound_message", recipient="+14165550199",
                              template={"name": "promo", "language": "en_US"},
                              created_at="9999-12-31T23:59:59Z")
    assert check.line(1, orjson.dumps({"topic": "whatsapp.statuses", "value": status})) is None
    result = check.line(2, orjson.dumps(message))
    assert result is not None and result["error_code"] == "USER_MARKETING_TEMPLATE_LIMIT"
    assert result["retry_after"] == "9999-12-31T23:59:59.998Z"  # clamped: the last instant
    out_of_range = check.line(3, orjson.dumps({**message, "created_at":
                                               "9999-12-31T23:59:59-01:00"}))
    assert out_of_range is not None and out_of_range["reason"] == "schema_invalid"


# -- the generator -----------------------------------------------------------------------------
def core_outcome(record: hostile.Hostile, max_bytes: int) -> str:
    """What the worker's route/catalog agents make of a record, by the pure core alone."""
    contract = hostile.CONTRACT_OF_TOPIC[record.topic]
    if record.topic == "templates" and record.value is None:
        return "dlq:empty" if record.key is None else "none"
    # The live reader: the gate's contract, or a Meta body on a state topic (no header, no map).
    settings = Settings(max_message_bytes=max_bytes)
    try:
        documents = read_input(contract, Record(record.topic, 0, 0, record.key, record.value,
                                                0.0), settings)
    except DecodeError as error:
        return f"dlq:{error.reason}"
    for kind, document in documents:
        if kind == "outbound_message":
            verdict = decide_live(document)
            return f"rejected:{verdict['error_code']}" if "error_code" in verdict \
                else "accepted"
        if kind in hostile.RECIPIENT_FIELD and \
                not parse_recipient(document[hostile.RECIPIENT_FIELD[kind]]).valid:
            return "dlq:schema_invalid"
    return "none"


def test_generator_expectations_match_the_core() -> None:
    started = time.monotonic()
    records = list(hostile.HostileInput(seed=7, max_bytes=8_192).events(4_000))
    categories = Counter(r.category for r in records)
    assert set(categories) == {*hostile.WEIGHTS, "good", "state_good"}, categories
    mismatches = [(r.category, r.expect, core_outcome(r, 8_192), r.value[:120] if r.value
                   else r.value) for r in records if core_outcome(r, 8_192) != r.expect]
    assert not mismatches, mismatches[:10]
    ids = [r.message_id for r in records if r.decided]
    assert len(ids) == len(set(ids)) and None not in ids
    assert time.monotonic() - started < 60


def test_generator_is_seeded() -> None:
    first = list(hostile.HostileInput(seed=3).events(300))
    second = list(hostile.HostileInput(seed=3).events(300))
    assert first == second
    assert first != list(hostile.HostileInput(seed=4).events(300))


def test_generator_covers_every_category_with_reasons() -> None:
    records = list(hostile.HostileInput(seed=11, max_bytes=4_096).events(3_000))
    expects = Counter(r.expect for r in records)
    for reason in REASONS:
        assert expects[f"dlq:{reason}"], reason
    assert expects["accepted"] and expects["rejected:INVALID_RECIPIENT"]
    assert expects["rejected:MARKETING_PAUSED_US"]


def test_printable_reasons_name_no_control_characters() -> None:
    assert all(c in string.printable for reason in REASONS for c in reason)


@FAST
@given(size=st.sampled_from([0, 1, 70_000, 674_000, 680_000, 999_000]),
       key=st.none() | st.binary(max_size=64) | st.sampled_from(
           [b"\x00" * 16_384, b"k" * 16_385, b"\xff" * 900_000]))
def test_dead_letters_fit_in_one_record(size: int, key: bytes | None) -> None:
    """Regression: a dead letter of a value near the broker's 1 MB limit was ~1.3 MB (base64)
    and the route agent crashed on MessageSizeTooLargeError."""
    value = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)
    letter = outputs.dead_letter("t", 0, 1, key, value, "too_large", "too big", NOW)
    kept_key = outputs.dead_letter_key(key)
    assert len(orjson.dumps(letter)) + len(kept_key or b"") <= outputs.DEAD_LETTER_MAX_BYTES
    assert contracts.first_error("dead_letter", letter) is None
    raw = base64.b64decode(letter["value_base64"])
    if raw != value:
        assert value.startswith(raw) and len(raw) > 500_000
        assert f"holds the first {len(raw)} of the value's {size} bytes" in letter["error"]
    if key is not None and kept_key is None:
        assert f"the key of {len(key)} bytes is not kept" in letter["error"]


def test_catalog_keeps_only_the_contract_fields() -> None:
    """Regression: extra fields went into the catalog's history (up to four entries) and its
    changelog record outgrew the broker's limit, so the entry was lost on restart."""
    from processors.runtime import catalog

    table: dict[str, Any] = {}
    for day in range(1, 6):
        entry = hostile.example("template_entry", updated_at=f"2026-01-0{day}T00:00:00Z",
                                pad="\u00e9" * 300_000)
        catalog.apply(table, b"k", orjson.dumps(entry), 1_000_000)
    (history,) = table.values()
    assert len(history) == 4 and all(set(e) == set(catalog.ENTRY_FIELDS) for e in history)
    assert len(json.dumps(history)) < 2_000


@pytest.mark.parametrize(("count", "reason"), [(10_000, None), (60_000, "too_large")])
def test_size_limit_holds_as_the_gate_writes_the_value(count: int, reason: str | None) -> None:
    """Regression: 1e15 is written back as 1000000000000000.0; a 900 KB input grew to 3 MB
    in the repartition envelope and crashed the worker (MessageSizeTooLargeError)."""
    raw = orjson.dumps(hostile.example("outbound_message"))[:-1] + b',"n":[' + \
        b",".join([b"1e15"] * count) + b"]}"
    assert len(raw) < 400_000
    result = decoded_or_reason("outbound_message", raw, 1_000_000)
    if reason is None:
        decide_live(result)
    else:
        assert isinstance(result, DecodeError) and result.reason == reason
        assert "as the gate writes it back" in str(result)
