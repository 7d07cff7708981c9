"""Recipient number parsing (libphonenumber metadata) and template category resolution. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
_TYPE_NAMES = {
    value: name for name, value in vars(PhoneNumberType).items() if isinstance(value, int)
}
_STRIP = str.maketrans("", "", " -().\u00a0")


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the number tells us. e164 is None when the number is not valid."""

    e164: str | None
    region: str | None
    calling_code: int | None
    number_type: str | None
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.e164 is not None


@lru_cache(maxsize=262_144)
def parse_recipient(recipient: str, region_hint: str | None = None) -> Recipient:
    """Parse a recipient as E.164, Meta wa_id digits (international), or national + region hint.

    Cached: campaigns send to the same recipients over and over, and parsing dominates the cost.
    """
    text = recipient.strip().translate(_STRIP)
    hint = region_hint.upper() if region_hint else None
    if not text.startswith("+") and hint is None:
        # Meta's wa_id: the international number without '+'.
        text = "+" + text.removeprefix("00")
    try:
        number = phonenumbers.parse(text, hint)
    except NumberParseException as exc:
        return Recipient(None, None, None, None, problem=f"unparsable number ({exc.error_type})")
    if not phonenumbers.is_valid_number(number):
        return Recipient(
            None, None, number.country_code, None, problem="not a valid number for any region"
        )
    return Recipient(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=phonenumbers.region_code_for_number(number),
        calling_code=number.country_code,
        number_type=_TYPE_NAMES.get(phonenumbers.number_type(number), "UNKNOWN"),
    )


def resolve_category(
    message: dict[str, Any], catalog_entry: dict[str, Any] | None
) -> tuple[str | None, str | None]:
    """(category, source): catalog > sender-declared > MARKETING default; free-form has none."""
    if message.get("kind") != "template":
        return None, None
    if catalog_entry is not None and catalog_entry.get("category") in CATEGORIES:
        return str(catalog_entry["category"]), "catalog"
    declared = (message.get("template") or {}).get("category")
    if declared in CATEGORIES:
        return str(declared), "declared"
    # Meta treats unclear content as marketing; so do we.
    return "MARKETING", "default"
