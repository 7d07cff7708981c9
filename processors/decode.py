"""Raw record bytes -> a validated contract document, or a DecodeError saying why. Pure."""

from __future__ import annotations

from typing import Any

import orjson

from processors import contracts

DEFAULT_MAX_BYTES = 1_000_000


class DecodeError(ValueError):
    """Input that cannot be decided: reason is a short stable code, str() a readable message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode(contract: str, raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    return validate(contract, parse_json(raw, max_bytes))


def parse_json(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    if not raw:
        raise DecodeError("empty", "the record has no value")
    if len(raw) > max_bytes:
        raise DecodeError("too_large", f"the value is {len(raw)} bytes, over the {max_bytes} limit")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("not_utf8", f"the value is not UTF-8 ({exc.reason} at byte {exc.start})")\
            from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", f"the value is not JSON: {exc}") from exc


def validate(contract: str, document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise DecodeError("schema_invalid", f"expected a JSON object, got {kind}")
    problem = contracts.first_error(contract, document)
    if problem:
        raise DecodeError("schema_invalid", f"not a valid {contract}: {problem}")
    return document
