"""Raw record bytes -> a validated contract document, or a DecodeError saying why. Pure."""

from __future__ import annotations

from typing import Any

import orjson

from processors.core import contracts

DEFAULT_MAX_BYTES = 1_000_000
# Deepest nesting of arrays/objects accepted in an input value. orjson.loads accepts 1,024
# levels but orjson.dumps refuses more than 254, and the gate re-serialises every input inside
# its outputs (a rejection nests the message two levels down; the repartition envelope adds
# one more). Without this limit a schema-valid message with a deep `context` was decoded, then
# crashed the route agent when its decision was written. Real contract documents nest < 5 deep.
MAX_DEPTH = 64


class DecodeError(ValueError):
    """Input that cannot be decided: reason is a short stable code, str() a readable message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode(contract: str, raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    return validate(contract, parse_json(raw, max_bytes))


# orjson writes a value back at most ~4.5 times as long as it was read
# ("1e15" -> 1000000000000000.0).
EXPANSION = 5


def parse_json(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    if not raw:
        raise DecodeError("empty", "the record has no value")
    if len(raw) > max_bytes:
        raise DecodeError("too_large", f"the value is {len(raw)} bytes, over the {max_bytes} limit")
    try:
        document = orjson.loads(raw)  # refuses invalid UTF-8 too
    except orjson.JSONDecodeError as exc:
        # Say which of the two it was; decoding only here keeps a copy of every value as str
        # off the hot path.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise DecodeError("not_utf8", f"the value is not UTF-8 ({bad.reason} at byte "
                                          f"{bad.start})") from bad
        raise DecodeError("not_json", f"the value is not JSON: {exc}") from exc
    # Nesting depth is at most the number of '[' and '{' bytes: count them at C speed and walk
    # the document only in the rare case that there are more than the limit.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and depth(document) > MAX_DEPTH:
        raise DecodeError("schema_invalid",
                          f"the value nests arrays/objects more than {MAX_DEPTH} levels deep")
    # The size limit holds for the value as the gate writes it back (inside its outputs and the
    # repartition envelope), not only as it was sent: numbers such as 1e15 are written back 3.6
    # times longer, and a 900 KB input so written crashed the worker (MessageSizeTooLargeError
    # from the broker). Measured only for inputs that could grow past the limit.
    if len(raw) * EXPANSION > max_bytes:
        written = len(orjson.dumps(document))
        if written > max_bytes:
            raise DecodeError("too_large", f"the value is {written} bytes as the gate writes it "
                                           f"back ({len(raw)} as sent), over the {max_bytes} limit")
    return document


def depth(document: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, [] is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((item, level) for item in value)
    return deepest


def validate(contract: str, document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise DecodeError("schema_invalid", f"expected a JSON object, got {kind}")
    problem = contracts.first_error(contract, document)
    if problem:
        raise DecodeError("schema_invalid", f"not a valid {contract}: {problem}")
    return document
