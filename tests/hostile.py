"""Seeded hostile input for the gate: bad events of every kind, each tagged with what must become
of it, interleaved with good events. Pure: yields records, sends none.

Every record says where it goes (a field name of processors.settings.Topics), its raw key and
value, its category, and its expected outcome:
  "accepted"                  decided and allowed
  "rejected:<ERROR_CODE>"     decided and rejected with that code
  "dlq:<reason>"              a dead letter with that reason (processors.core.decode.DecodeError)
  "none"                      a valid state event: it changes state and has no output
Decided records carry their message_id (unique per run: the worker drops repeated ids), the
rest are found in the dead-letter topic by topic/partition/offset.

Used by tests/unit/test_hostile_input.py, tests/e2e/test_hostile_input.py and
`python -m tests.benchmarks.hostile`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# A Canadian and a US number: UTILITY to Canada is accepted; MARKETING to the US is rejected
# (MARKETING_PAUSED_US, in force since 2025-04-01; the live clock is later).
CA = "+14165550123"
US = "+12015550123"
CREATED = "2026-01-01T00:00:00Z"
# Business-scoped user IDs (Meta, 2026): the region is the prefix, so a BSUID of Canada is sent
# to like a Canadian number, one of the US is under the US marketing pause; an authentication
# template to any BSUID is refused (BSUID_RECIPIENT_UNSUPPORTED, Meta 131062).
CA_BSUID = "CA.13491208655302741918"
CA_PARENT = "CA.ENT.11815799212886844830"
US_BSUID = "US.10293847561029384756"

# Recipients in odd formats -> expected outcome of an otherwise good UTILITY message. The
# number is read as libphonenumber reads it: punctuation, spaces, Unicode digits of any script
# (Arabic-Indic, full-width) and an "ext." tail are allowed; a wa_id is international digits.
ODD_RECIPIENTS: tuple[tuple[str, str | None, str], ...] = (
    ("+1 (416) 555-0123", None, "accepted"),
    ("+1-416-555-0123", None, "accepted"),
    ("+1.416.555.0123", None, "accepted"),
    ("001 416 555 0123", None, "accepted"),  # 00 international prefix
    ("0014165550123", None, "accepted"),
    ("14165550123", None, "accepted"),  # Meta wa_id
    ("  +14165550123  ", None, "accepted"),
    ("+1\u00a0416\u00a0555\u00a00123", None, "accepted"),  # no-break spaces
    ("+1\u200b4165550123", None, "accepted"),  # zero-width space
    ("+\uff11\uff14\uff11\uff16\uff15\uff15\uff15\uff10\uff11\uff12\uff13", None, "accepted"),
    ("+\u0661\u0664\u0661\u0666\u0665\u0665\u0665\u0660\u0661\u0662\u0663", None, "accepted"),
    ("\u0661\u0664\u0661\u0666\u0665\u0665\u0665\u0660\u0661\u0662\u0663", None, "accepted"),
    ("+14165550123 ext. 5", None, "accepted"),
    ("4165550123", "CA", "accepted"),  # national number with its region
    ("(416) 555-0123", "ca", "accepted"),  # lower-case region hint
    ("-14165550123", None, "accepted"),  # '-' is a separator to libphonenumber
    ("++14165550123", None, "accepted"),
    ("\u0660\u0661\u0662\u0663", None, "rejected:INVALID_RECIPIENT"),  # Arabic-Indic 0123
    ("\uff10\uff11\uff12", None, "rejected:INVALID_RECIPIENT"),  # full-width 012
    ("1e10", None, "rejected:INVALID_RECIPIENT"),
    ("14165550123.0", None, "rejected:INVALID_RECIPIENT"),
    ("1.4165550123e10", None, "rejected:INVALID_RECIPIENT"),
    ("tel:+14165550123", None, "rejected:INVALID_RECIPIENT"),
    ("tel:+1-416-555-0123", None, "rejected:INVALID_RECIPIENT"),
    ("NaN", None, "rejected:INVALID_RECIPIENT"),
    ("Infinity", None, "rejected:INVALID_RECIPIENT"),
    ("-Infinity", None, "rejected:INVALID_RECIPIENT"),
    ("0", None, "rejected:INVALID_RECIPIENT"),
    ("+", None, "rejected:INVALID_RECIPIENT"),
    (" ", None, "rejected:INVALID_RECIPIENT"),
    ("00000014165550123", None, "rejected:INVALID_RECIPIENT"),  # leading zeros
    ("9" * 64, None, "rejected:INVALID_RECIPIENT"),  # longest the schema allows
    ("+1" + "0" * 62, None, "rejected:INVALID_RECIPIENT"),
    ("+1 416 555 012", None, "rejected:INVALID_RECIPIENT"),  # one digit short
    ("(416) 555-0123", None, "rejected:INVALID_RECIPIENT"),  # national, no region: read as +41…
    ("4165550123", "ZZ", "rejected:INVALID_RECIPIENT"),  # unknown region
    ("acme support", None, "rejected:INVALID_RECIPIENT"),
    ("\U0001f4de +14165550123", None, "rejected:INVALID_RECIPIENT"),  # a telephone emoji
    # Business-scoped user IDs: "<region>.<alphanumeric>", a parent one with "ENT." between.
    (CA_BSUID, None, "accepted"),
    (CA_PARENT, None, "accepted"),
    ("ca.13491208655302741918", None, "accepted"),  # the region in lower case
    ("  CA.13491208655302741918  ", None, "accepted"),
    ("CA.abcDEF123", None, "accepted"),  # alphanumeric
    (CA_BSUID, "US", "accepted"),  # a region hint does not apply to a BSUID
    ("ZZ.13491208655302741918", None, "rejected:INVALID_RECIPIENT"),  # no such region
    ("CA.", None, "rejected:INVALID_RECIPIENT"),  # nothing after the dot
    ("CA.ENT.", None, "rejected:INVALID_RECIPIENT"),
    ("CA..13491208655302741918", None, "rejected:INVALID_RECIPIENT"),
    ("CA.1349-1208-6553", None, "rejected:INVALID_RECIPIENT"),
    ("CA.1349 1208 6553", None, "rejected:INVALID_RECIPIENT"),
    ("CA.ENT.ENT.1181579921", None, "rejected:INVALID_RECIPIENT"),
    ("CA.\u0661\u0663\u0664\u0669", None, "rejected:INVALID_RECIPIENT"),  # Arabic-Indic digits
    ("CA.13491208655302741918\u200b", None, "rejected:INVALID_RECIPIENT"),  # zero-width space
    ("\uff23\uff21.13491208655302741918", None, "rejected:INVALID_RECIPIENT"),  # full-width CA
    ("CA." + "9" * 137, None, "accepted"),  # the longest recipient the schema allows
)

# Recipients that are not strings: JSON numbers and others; the schema refuses them.
NON_STRING_RECIPIENTS: tuple[Any, ...] = (
    14165550123, -14165550123, 1.4165550123e10, 14165550123.0, 0, -1, 2**63, 10**30, 1e300,
    -0.0, True, False, None, [CA], {"e164": CA},
)
# Numbers written in ways JSON does not allow: the value is not JSON.
BAD_NUMBER_TOKENS: tuple[bytes, ...] = (
    b"NaN", b"Infinity", b"-Infinity", b"+14165550123", b"014165550123", b"1e400", b"-1e400",
    b"0x14165550123", b"1_416_555_0123", b".5", b"5.", b"1e", b"--1", b"\xd9\xa1\xd9\xa4",
)
ODD_UNICODE: tuple[str, ...] = (
    "\u0000", "\u202e", "\u200d", "\ufeff", "\uffff", "\U0001f600", "e\u0301", "\u0627\u0644",
    "\U0010ffff", "\u2028", "\\", '"', "\t\n\r", "\u00e9" * 3, "\U0001f468\u200d\U0001f469",
)
# Byte sequences that are never UTF-8.
BAD_UTF8: tuple[bytes, ...] = (
    b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf5\x80\x80\x80",
    b"\x80", b"\xf0\x9f\x98", b"\xc3\x28", b"\xf8\x88\x80\x80\x80",
)
# Field -> wrong values the schema refuses, per contract.
_COMMON: tuple[Any, ...] = (None, 1, -1, 1.5, True, [], {}, "")
# The optional BSUID fields of a state event that link it to the user's number: strings.
_LINK_FIELDS: dict[str, tuple[Any, ...]] = {
    "user_id": (None, 1, 13491208655302741918, True, [], {"id": CA_BSUID}, [CA_BSUID],
                "U" * 141),
    "parent_user_id": (None, 1, False, [], {}, [CA_PARENT], "P" * 141),
}
WRONG_VALUES: dict[str, dict[str, tuple[Any, ...]]] = {
    "outbound_message": {
        "schema_version": ("1", 2, 0, True, None, 1.5, []),
        "message_id": (*_COMMON, "m" * 257),
        "tenant_id": (*_COMMON, "t" * 129),
        "recipient": (*NON_STRING_RECIPIENTS, "", "1" * 141),
        "recipient_region": ("USA", "U", "U1", "", 1, None, "\u00dfS", "\uff35\uff33"),
        "business_number": (1, None, [], "9" * 65),
        "kind": ("TEMPLATE", "freeform", "", 1, None, "template\u0000", []),
        "template": ("order_update", 1, [], None, {"name": "x"}, {"language": "en"},
                     {"name": "", "language": "en"}, {"name": 1, "language": "en"},
                     {"name": "x", "language": "en", "category": "utility"},
                     {"name": "x" * 513, "language": "en"}),
        "origin": ("robot", "API", 1, None, ""),
        "created_at": (1767225600, "yesterday", "2026-01-01", "2026-01-01T00:00:00",
                       "2026-01-01 00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z",
                       "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", None, ""),
        "scheduled_at": (0, "soon", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59-01:00"),
        "context": ([], "ticket", 1, None, True),
    },
    "delivery_status": {
        "tenant_id": (*_COMMON, "t" * 129),
        "recipient": (*NON_STRING_RECIPIENTS, "", "1" * 141),
        "status": ("FAILED", "bounced", 1, None),
        "timestamp": (1767225600, "now", "2026-01-01T00:00:00", None),
        "errors": ("131049", 131049, [131049], [{"code": "131049"}], [{"title": "x"}],
                   [{"code": 131049.5}], None),
        **_LINK_FIELDS,
    },
    "inbound_message": {
        "tenant_id": (*_COMMON, "t" * 129),
        "sender": (*NON_STRING_RECIPIENTS, "", "1" * 141),
        "timestamp": (1767225600, "now", "2026-01-01", None),
        "referral": ("ad", 1, [], {"source_type": 1}),
        **_LINK_FIELDS,
    },
    "user_preference": {
        "tenant_id": (*_COMMON, "t" * 129),
        "recipient": (*NON_STRING_RECIPIENTS, "", "1" * 141),
        "preference": ("STOP", "unsubscribe", 1, None, ""),
        "timestamp": (1767225600, "now", None),
        **_LINK_FIELDS,
    },
    "template_entry": {
        "tenant_id": (*_COMMON, "t" * 129),
        "name": (*_COMMON, "n" * 513),
        "language": (*_COMMON, "l" * 33),
        "category": ("marketing", "PROMO", 1, None),
        "status": ("approved", "LIVE", 1, None),
        "updated_at": (1767225600, "now", None, "2026-01-01T00:00:00"),
    },
}
CONTRACT_OF_TOPIC = {"outbound": "outbound_message", "statuses": "delivery_status",
                     "inbound": "inbound_message", "preferences": "user_preference",
                     "templates": "template_entry"}
# Which field of a state contract names the recipient (a dead letter when it is no number).
RECIPIENT_FIELD = {"delivery_status": "recipient", "inbound_message": "sender",
                   "user_preference": "recipient"}


def example(contract: str, **changes: Any) -> dict[str, Any]:
    """A valid document of a contract (as in schemas/examples), with changes applied."""
    documents: dict[str, dict[str, Any]] = {
        "outbound_message": {
            "schema_version": 1, "message_id": "m-1", "tenant_id": "hostile", "recipient": CA,
            "kind": "template",
            "template": {"name": "order_update", "language": "en_US", "category": "UTILITY"},
            "origin": "api", "created_at": CREATED, "context": {"ticket_id": "T-1"}},
        "delivery_status": {"tenant_id": "hostile", "recipient": CA, "message_id": "m-1",
                            "status": "failed", "timestamp": CREATED,
                            "errors": [{"code": 131049, "title": "limit"}]},
        "inbound_message": {"tenant_id": "hostile", "sender": CA[1:], "timestamp": CREATED,
                            "referral": {"source_type": "ad"}},
        "user_preference": {"tenant_id": "hostile", "recipient": CA, "preference": "stop",
                            "timestamp": CREATED},
        "template_entry": {"tenant_id": "hostile", "name": "order_update",
                           "language": "en_US", "category": "UTILITY", "status": "APPROVED",
                           "updated_at": CREATED},
    }
    return {**documents[contract], **changes}


def dumps(value: Any) -> bytes:
    """JSON bytes of any value; integers past 64 bits (which orjson will not write) as well."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def nested(depth: int, leaf: Any = 1, rng: random.Random | None = None) -> Any:
    """A value nested `depth` arrays/objects deep (depth 0 is the leaf)."""
    value = leaf
    for level in range(depth):
        use_object = rng.random() < 0.5 if rng else level % 2 == 1
        value = {"k": value} if use_object else [value]
    return value


def nested_bytes(depth: int) -> bytes:
    """'[[[...]]]' written directly: deeper than any JSON library would serialise."""
    return b"[" * depth + b"1" + b"]" * depth


@dataclass(frozen=True, slots=True)
class Hostile:
    topic: str  # a field name of processors.settings.Topics
    key: bytes | None
    value: bytes | None
    category: str
    expect: str  # "accepted" | "rejected:<CODE>" | "dlq:<reason>" | "none"
    message_id: str | None = None  # set when the record must be decided

    @property
    def decided(self) -> bool:
        return self.expect == "accepted" or self.expect.startswith("rejected:")


# Bad-event categories and their weights in a run.
WEIGHTS: dict[str, int] = {
    "empty": 4, "null_value": 3, "not_json": 12, "bad_number_token": 5, "invalid_utf8": 8,
    "not_object": 5, "wrong_type": 14, "missing_field": 8, "huge_string": 5,
    "deep_nesting": 6, "over_max": 1, "odd_number": 10, "odd_unicode": 5, "odd_key": 3,
    "state_bad": 10, "state_bad_number": 3, "expands": 1, "meta_body": 4,
}


class HostileInput:
    """Seeded: the same seed gives the same records, byte for byte."""

    def __init__(self, seed: int = 42, max_bytes: int = 65_536, run: str = "h",
                 broker_limit: int = 1_000_000) -> None:
        self.rng = random.Random(seed)
        self.max_bytes = max_bytes
        # Over-max records stay under the broker's record limit (and, as base64 inside a dead
        # letter, under the producer's), so they reach the gate at all.
        self.broker_limit = broker_limit
        self.run = run
        self.sequence = 0
        self._makers: dict[str, Callable[[], Hostile]] = {
            name: getattr(self, f"_{name}") for name in WEIGHTS}
        self._names = list(WEIGHTS)
        self._weights = list(WEIGHTS.values())

    # -- the stream ------------------------------------------------------------------------
    def events(self, bad: int, good_every: int = 4, state_every: int = 36,
               only: Sequence[str] | None = None) -> Iterator[Hostile]:
        """`bad` bad events (of the `only` categories if given), a good outbound message after
        every `good_every` of them and a valid state event after every `state_every`."""
        for index in range(1, bad + 1):
            yield self.bad(self.rng.choice(only) if only else None)
            if good_every and index % good_every == 0:
                yield self.good()
            if state_every and index % state_every == 0:
                yield self.state_good()

    def bad(self, category: str | None = None) -> Hostile:
        name = category or self.rng.choices(self._names, weights=self._weights)[0]
        return self._makers[name]()

    def good(self) -> Hostile:
        """A valid message: 45% utility to a Canadian number (accepted), 45% marketing to a US
        number (paused); 10% to BSUIDs: utility to a Canadian one (accepted), marketing to a
        US one (paused) or authentication to one (BSUID_RECIPIENT_UNSUPPORTED)."""
        message_id = self._id()
        roll = self.rng.random()
        marketing = {"name": "spring_sale", "language": "en_US", "category": "MARKETING"}
        if roll < 0.45:
            document = example("outbound_message", message_id=message_id)
            expect = "accepted"
        elif roll < 0.9:
            document = example("outbound_message", message_id=message_id, recipient=US,
                               template=marketing)
            expect = "rejected:MARKETING_PAUSED_US"
        elif roll < 0.94:
            document = example("outbound_message", message_id=message_id,
                               recipient=self.rng.choice([CA_BSUID, CA_PARENT]))
            expect = "accepted"
        elif roll < 0.97:
            document = example("outbound_message", message_id=message_id, recipient=US_BSUID,
                               template=marketing)
            expect = "rejected:MARKETING_PAUSED_US"
        else:
            document = example("outbound_message", message_id=message_id,
                               recipient=self.rng.choice([CA_BSUID, CA_PARENT]),
                               template={"name": "login_code", "language": "en_US",
                                         "category": "AUTHENTICATION"})
            expect = "rejected:BSUID_RECIPIENT_UNSUPPORTED"
        return Hostile("outbound", document["recipient"].encode(), orjson.dumps(document),
                       "good", expect, message_id)

    # -- helpers ---------------------------------------------------------------------------
    def _id(self) -> str:
        self.sequence += 1
        return f"{self.run}-{self.sequence:09d}"

    def _outbound(self, **changes: Any) -> dict[str, Any]:
        return example("outbound_message", **{"message_id": self._id(), **changes})

    def _decided(self, category: str, document: dict[str, Any], expect: str,
                 key: bytes | None = b"k", raw: bytes | None = None) -> Hostile:
        value = raw if raw is not None else orjson.dumps(document)
        if len(value) > self.max_bytes:  # size is checked first: too large to be decided
            return self._dlq(category, value, "too_large", key=key)
        return Hostile("outbound", key, value, category, expect, document["message_id"])

    def _dlq(self, category: str, value: bytes | None, reason: str, topic: str = "outbound",
             key: bytes | None = b"k") -> Hostile:
        if value and len(value) > self.max_bytes:  # size is checked before anything else
            reason = "too_large"
        return Hostile(topic, key, value, category, f"dlq:{reason}")

    def _text(self, size: int) -> str:
        pieces = [*ODD_UNICODE, "a", "Z", "9", " ", "+"]
        return "".join(self.rng.choice(pieces) for _ in range(size))

    # -- categories ------------------------------------------------------------------------
    def _empty(self) -> Hostile:
        return self._dlq("empty", b"", "empty")

    def _null_value(self) -> Hostile:
        return self._dlq("null_value", None, "empty", key=self.rng.choice([None, b"k"]))

    def _not_json(self) -> Hostile:
        good = orjson.dumps(self._outbound())
        choice = self.rng.randrange(9)
        if choice == 0:  # cut short anywhere
            value = good[: self.rng.randrange(1, len(good) - 1)]
        elif choice == 1:  # printable garbage
            value = bytes(self.rng.randrange(33, 127) for _ in range(self.rng.randrange(1, 200)))
            value = b"x" + value  # never starts as a JSON value
        elif choice == 2:
            value = good.replace(b'"', b"'")
        elif choice == 3:
            value = good[:-1] + b",}"
        elif choice == 4:
            value = good + good
        elif choice == 5:
            value = b"\xef\xbb\xbf" + good  # a UTF-8 byte order mark
        elif choice == 6:
            value = nested_bytes(self.rng.randrange(1025, 10_001))  # past orjson's 1,024 levels
        elif choice == 7:
            value = b'{"message_id": "\\ud800"}'  # an unpaired surrogate escape
        else:
            value = self.rng.choice([b" ", b"\n", b"\t\r\n", b"{", b"}", b"[", b'"', b"nul"])
        return self._dlq("not_json", value, "not_json")

    def _bad_number_token(self) -> Hostile:
        token = self.rng.choice(BAD_NUMBER_TOKENS)
        field = self.rng.choice([b"recipient", b"schema_version", b"message_id"])
        document = orjson.dumps(self._outbound())
        start = document.index(b'"' + field + b'":') + len(field) + 3
        end = document.index(b",", start)
        value = document[:start] + token + document[end:]
        reason = "not_utf8" if not _is_utf8(value) else "not_json"
        return self._dlq("bad_number_token", value, reason)

    def _invalid_utf8(self) -> Hostile:
        bad = self.rng.choice(BAD_UTF8)
        choice = self.rng.randrange(3)
        if choice == 0:  # inside a string of a valid document
            document = orjson.dumps(self._outbound(tenant_id="acme-TENANT"))
            value = document.replace(b"TENANT", bad)
        elif choice == 1:  # random bytes
            noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(300)))
            value = bad + noise + b"\xff"  # 0xff never occurs in UTF-8
        else:  # Latin-1, not UTF-8
            value = orjson.dumps(self._outbound(tenant_id="caf\u00e9")).decode().encode(
                "latin-1")
        return self._dlq("invalid_utf8", value, "not_utf8")

    def _not_object(self) -> Hostile:
        value = self.rng.choice([b"[]", b"1", b"-0.5e3", b'"text"', b"null", b"true", b"false",
                                 b"[{}]", b'"' + CA.encode() + b'"', b"14165550123",
                                 orjson.dumps([self._outbound()])])
        return self._dlq("not_object", value, "schema_invalid")

    def _wrong_type(self, topic: str | None = None) -> Hostile:
        topic = topic or "outbound"
        contract = CONTRACT_OF_TOPIC[topic]
        field = self.rng.choice(list(WRONG_VALUES[contract]))
        wrong = self.rng.choice(WRONG_VALUES[contract][field])
        if contract == "outbound_message":
            document = self._outbound(**{field: wrong})
        else:
            document = example(contract, **{field: wrong})
        return self._dlq("wrong_type", dumps(document), "schema_invalid", topic)

    def _missing_field(self, topic: str | None = None) -> Hostile:
        topic = topic or "outbound"
        contract = CONTRACT_OF_TOPIC[topic]
        document = self._outbound() if contract == "outbound_message" else example(contract)
        required = [name for name in document if name in _REQUIRED[contract]]
        if contract == "outbound_message":
            required.append("template")  # required when kind is template
        for name in self.rng.sample(required, self.rng.randrange(1, len(required) + 1)):
            document.pop(name, None)
        return self._dlq("missing_field", orjson.dumps(document), "schema_invalid", topic)

    def _huge_string(self) -> Hostile:
        # Pieces of up to ~11 bytes of JSON each; the text goes in twice (1.5 times its size).
        size = self.rng.randrange(1_000, max(1_001, self.max_bytes // 20))
        text = self._text(size)
        if self.rng.random() < 0.5:  # within the limit, in a free field: decided as usual
            document = self._outbound(context={"note": text}, note=text[: size // 2])
            return self._decided("huge_string", document, "accepted")
        field = self.rng.choice(["message_id", "tenant_id", "recipient", "business_number",
                                 "created_at"])
        document = self._outbound(**{field: text})
        return self._dlq("huge_string", orjson.dumps(document), "schema_invalid")

    def _deep_nesting(self) -> Hostile:
        from processors.core.decode import MAX_DEPTH  # the gate's limit on nesting

        roll = self.rng.random()
        if roll < 0.3:  # within the limit: decided as usual
            depth = self.rng.randrange(1, MAX_DEPTH - 1)  # context itself is one level
            document = self._outbound(context={"deep": nested(depth, rng=self.rng)})
            return self._decided("deep_nesting", document, "accepted")
        if roll < 0.75:  # parses, but deeper than the gate can write back: refused
            depth = self.rng.randrange(MAX_DEPTH, 1_023)
            field = self.rng.choice(["context", "extra"])
            # Written as bytes: orjson would refuse to serialise it (more than 254 levels).
            raw = orjson.dumps({k: v for k, v in self._outbound().items() if k != field})
            value = raw[:-1] + f',"{field}":{{"deep":'.encode() + nested_bytes(depth) + b"}}"
            return self._dlq("deep_nesting", value, "schema_invalid")
        return self._dlq("deep_nesting", nested_bytes(self.rng.randrange(1_025, 10_001)),
                         "not_json")

    def _over_max(self) -> Hostile:
        ceiling = min(self.broker_limit - 10_000, self.max_bytes * 4)
        if self.rng.random() < 0.1:
            ceiling = self.broker_limit - 10_000  # now and then: close to the broker's limit
        size = self.rng.randrange(self.max_bytes + 1, max(self.max_bytes + 2, ceiling))
        if self.rng.random() < 0.5:  # a valid document, padded
            document = self._outbound(context={"pad": ""})
            base = len(orjson.dumps(document))
            document["context"]["pad"] = "x" * max(0, size - base)
            value = orjson.dumps(document)
        else:
            value = bytes(self.rng.randrange(256) for _ in range(64)) * (size // 64 + 1)
        return self._dlq("over_max", value, "too_large")

    def _expands(self) -> Hostile:
        """Under the size limit as sent, over it as the gate writes it: JSON numbers such as
        1e15 are written back as 1000000000000000.0, 3.6 times as long."""
        low = self.max_bytes // 40
        high = self.max_bytes // 5 - min(2_000, self.max_bytes // 50)  # stay under the limit
        count = self.rng.randrange(low, max(low + 1, high))
        document = self._outbound()
        raw = orjson.dumps(document)[:-1] + b',"extra":[' + b",".join([b"1e15"] * count) + b"]}"
        within = len(orjson.dumps(orjson.loads(raw))) <= self.max_bytes
        if within:
            return self._decided("expands", document, "accepted", raw=raw)
        return self._dlq("expands", raw, "too_large")

    def _odd_number(self) -> Hostile:
        recipient, region, expect = self.rng.choice(ODD_RECIPIENTS)
        changes: dict[str, Any] = {"recipient": recipient}
        if region is not None:
            changes["recipient_region"] = region
        return self._decided("odd_number", self._outbound(**changes), expect,
                             key=recipient.encode())

    def _odd_unicode(self) -> Hostile:
        text = self._text(self.rng.randrange(1, 40))
        field = self.rng.choice(["tenant_id", "message_id", "template", "context", "origin"])
        if field == "origin":  # an enum: odd text there is refused
            document = self._outbound(origin=text)
            return self._dlq("odd_unicode", orjson.dumps(document), "schema_invalid")
        document = self._outbound()
        if field == "tenant_id":
            document["tenant_id"] = ("t" + text)[:128]
        elif field == "message_id":
            document["message_id"] += text[:100]
        elif field == "template":
            document["template"] = {"name": text[:512], "language": text[:32],
                                    "category": "UTILITY"}
        else:
            document["context"] = {text: text, "list": [text, 1, None, 1.5e300, -0.0]}
        return self._decided("odd_unicode", document, "accepted")

    def _odd_key(self) -> Hostile:
        key = self.rng.choice([None, b"", b"\xff\xfe", b"k" * 50_000,
                               self._text(20).encode(), CA.encode()])
        document = self._outbound()
        return self._decided("odd_key", document, "accepted", key=key if key else None)

    def _state_bad(self) -> Hostile:
        topic = self.rng.choice(["statuses", "inbound", "preferences", "templates"])
        roll = self.rng.randrange(7)
        if roll == 0:
            return self._wrong_type(topic)
        if roll == 1:
            return self._missing_field(topic)
        if roll == 2:
            return self._dlq("state_bad", b"{\"tenant_id\": ", "not_json", topic)
        if roll == 3:
            return self._dlq("state_bad", b"\xff" + orjson.dumps(example(
                CONTRACT_OF_TOPIC[topic])), "not_utf8", topic)
        if roll == 4:
            if topic == "templates":  # a tombstone names its entry by key: an empty value here
                # (a compacted topic refuses records without a key, so a keyless tombstone
                # cannot reach the gate; the catalog agent turns one into a dead letter anyway)
                return self._dlq("state_bad", b"", "empty", topic)
            return self._dlq("state_bad", self.rng.choice([None, b""]), "empty", topic)
        if roll == 5:  # orjson parses up to 1,024 levels; the gate keeps up to MAX_DEPTH
            depth = self.rng.randrange(65, 2_000)
            reason = "schema_invalid" if depth <= 1_024 else "not_json"
            return self._dlq("state_bad", nested_bytes(depth), reason, topic)
        return self._dlq("state_bad", b"{" + b" " * (self.max_bytes + 10) + b"}", "too_large",
                         topic)

    def state_good(self) -> Hostile:
        """A valid state event, now and then with large extra fields; no output. Its tenant is
        not the good events' tenant, so it changes no decision the run expects. A user's
        event may name the BSUID alone, or the number and the BSUID (which links them; a
        user_id that is no BSUID links nothing), as Meta's webhooks do since 2026."""
        topic = self.rng.choice(["statuses", "inbound", "preferences", "templates"])
        contract = CONTRACT_OF_TOPIC[topic]
        changes: dict[str, Any] = {"tenant_id": "hostile-state"}
        if contract in RECIPIENT_FIELD:
            roll = self.rng.random()
            if roll < 0.15:  # the BSUID alone
                changes[RECIPIENT_FIELD[contract]] = self.rng.choice([CA_BSUID, CA_PARENT])
            elif roll < 0.35:  # links the number and the BSUID (and the parent BSUID)
                changes["user_id"] = CA_BSUID
                if self.rng.random() < 0.5:
                    changes["parent_user_id"] = CA_PARENT
            elif roll < 0.4:  # strings that are no BSUID of their kind: nothing is linked
                changes["user_id"] = self.rng.choice([CA_PARENT, "ZZ.1", "CA.", "x", ""])
                changes["parent_user_id"] = self.rng.choice([CA_BSUID, "CA.ENT.", US])
        if self.rng.random() < 0.2:
            changes["pad"] = self._text(self.rng.randrange(1, max(2, self.max_bytes // 30)))
        if contract == "template_entry":
            changes["updated_at"] = f"2026-01-{self.rng.randrange(1, 29):02d}T00:00:00Z"
        document = example(contract, **changes)
        key = b"hostile-state:order_update:en_US" if topic == "templates" else b"k"
        value = orjson.dumps(document)
        if len(value) > self.max_bytes:
            return self._dlq("state_good", value, "too_large", topic, key=key)
        return Hostile(topic, key, value, "state_good", "none")

    def _meta_body(self) -> Hostile:
        """Meta-shaped bodies on a state topic: not a WhatsApp webhook, or no tenant for it
        (no tenant_id header, no tenant map)."""
        topic = self.rng.choice(["statuses", "inbound", "preferences"])
        if self.rng.random() < 0.5:
            body = {"object": self.rng.choice(["page", "instagram", "", 7]),
                    "entry": [{"id": "1", "changes": []}]}
            return self._dlq("meta_body", dumps(body), "not_meta_webhook", topic)
        status = {"id": "wamid.x", "recipient_id": CA[1:], "status": "failed",
                  "timestamp": "1767225600", "errors": [{"code": 131049}]}
        body = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
                "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"phone_number_id": "106540352242922"},
                    "statuses": [status]}}]}]}
        return self._dlq("meta_body", dumps(body), "no_tenant", topic)

    def _state_bad_number(self) -> Hostile:
        """Valid state events whose recipient is no phone number: nowhere to keep them."""
        contract = self.rng.choice(list(RECIPIENT_FIELD))
        topic = next(t for t, c in CONTRACT_OF_TOPIC.items() if c == contract)
        recipient, _, _ = self.rng.choice([r for r in ODD_RECIPIENTS
                                           if r[2] != "accepted" and r[1] is None])
        document = example(contract, **{RECIPIENT_FIELD[contract]: recipient})
        return self._dlq("state_bad_number", dumps(document), "schema_invalid", topic)


_REQUIRED = {
    "outbound_message": ("message_id", "tenant_id", "recipient", "kind", "created_at"),
    "delivery_status": ("tenant_id", "recipient", "status", "timestamp", "errors"),
    "inbound_message": ("tenant_id", "sender", "timestamp"),
    "user_preference": ("tenant_id", "recipient", "preference", "timestamp"),
    "template_entry": ("tenant_id", "name", "language", "category", "status", "updated_at"),
}


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

