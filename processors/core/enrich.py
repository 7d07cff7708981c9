"""Recipient parsing (phone numbers with libphonenumber's metadata, Meta's business-scoped user
IDs) and template category resolution. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    REGION_CODE_FOR_NON_GEO_ENTITY,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberType,
)
from phonenumbers.phonenumberutil import _number_type_helper, national_significant_number
from phonenumbers.re_util import re_compile

from processors.core.frozen import quick_init

CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
_TYPE_NAMES = {
    value: name for name, value in vars(PhoneNumberType).items() if isinstance(value, int)
}
_STRIP = str.maketrans("", "", " -().\u00a0")
# Recipient kinds (the enrichment's recipient_kind).
PHONE, BSUID, PARENT_BSUID = "phone", "bsuid", "parent_bsuid"
# Meta's business-scoped user ID: "<ISO 3166 alpha-2>.<alphanumeric>", a parent BSUID has
# "ENT." between. Anything starting with two letters and a dot is meant as one (no phone
# number does), so a bad one is an invalid recipient rather than a number that fails to parse.
_BSUID_LIKE = re.compile(r"[A-Za-z]{2}\.")
_BSUID = re.compile(r"([A-Za-z]{2})\.((?i:ENT)\.)?([A-Za-z0-9]+)")


@quick_init
@dataclass(frozen=True, slots=True)
class Recipient:
    """Who the recipient is. identity is None when it is neither a valid number nor a valid
    BSUID; e164 is None unless the recipient is a phone number (or a BSUID linked to one)."""

    e164: str | None
    region: str | None
    calling_code: int | None
    number_type: str | None
    problem: str | None = None
    kind: str | None = PHONE
    identity: str | None = None  # the E.164 number or the BSUID: what state is keyed by

    @property
    def valid(self) -> bool:
        return self.identity is not None


def is_bsuid_like(recipient: str) -> bool:
    return _BSUID_LIKE.match(recipient.strip()) is not None


def parse_bsuid(text: str) -> Recipient:
    """A business-scoped user ID (or parent BSUID): its region is its prefix, if libphonenumber
    knows that region."""
    text = text.strip()
    meant = PARENT_BSUID if text[3:7].upper() == "ENT." else BSUID
    match = _BSUID.fullmatch(text)
    if match is None:
        return Recipient(None, None, None, None, kind=meant,
                         problem="not a valid business-scoped user ID")
    region = match.group(1).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return Recipient(None, None, None, None, kind=meant,
                         problem="business-scoped user ID of an unknown region")
    kind = PARENT_BSUID if match.group(2) else BSUID
    # Meta writes the prefix and ENT in capitals; a lower-case copy is the same user.
    identity = f"{region}.{'ENT.' if match.group(2) else ''}{match.group(3)}"
    return Recipient(None, region, phonenumbers.country_code_for_region(region), None,
                     kind=kind, identity=identity)


@lru_cache(maxsize=131_072)
def parse_recipient(recipient: str, region_hint: str | None = None) -> Recipient:
    """Parse a recipient as a BSUID, E.164, Meta wa_id digits (international), or national +
    region hint.

    Cached twice: on the text as given (the hot path: campaigns send to the same recipients
    over and over), and on the normalised number, so that one number written as E.164 and as
    wa_id digits is parsed once; parsing dominates the cost of a decision.
    """
    if is_bsuid_like(recipient):
        return parse_bsuid(recipient)
    text = recipient.strip().translate(_STRIP)
    hint = region_hint.upper() if region_hint else None
    if not text.startswith("+") and hint is None:
        # Meta's wa_id: the international number without '+'.
        text = "+" + text.removeprefix("00")
    if text.startswith("+"):
        hint = None  # an international number: a region hint changes nothing
    return _parse_number(text, hint)


@lru_cache(maxsize=262_144)
def _parse_number(text: str, hint: str | None) -> Recipient:
    try:
        number = phonenumbers.parse(text, hint)
    except NumberParseException as exc:
        return Recipient(None, None, None, None, problem=f"unparsable number ({exc.error_type})")
    region, kind = region_and_type(number)
    if region is None:
        return Recipient(
            None, None, number.country_code, None, problem="not a valid number for any region"
        )
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Recipient(
        e164=e164,
        region=region,
        calling_code=number.country_code,
        number_type=_TYPE_NAMES.get(kind, "UNKNOWN"),
        identity=e164,
    )


def region_and_type(number: PhoneNumber) -> tuple[str | None, int]:
    """(region, PhoneNumberType) of a valid number, (None, UNKNOWN) of any other: what
    region_code_for_number(), is_valid_number_for_region() and number_type() say together.

    Those three match the number against its region's patterns (the costliest part of a new
    number: region_code_for_number() does it too, for +1 and the other shared calling codes),
    so called in turn they matched it up to four times; this matches it once and keeps the
    type found on the way. Their code in libphonenumber 9.0.43 (pinned), in one pass;
    tests/unit/core/test_enrich.py holds it to their answers for every region and type.
    """
    calling_code = number.country_code
    if calling_code is None or calling_code not in COUNTRY_CODE_TO_REGION_CODE:
        return None, PhoneNumberType.UNKNOWN
    regions = COUNTRY_CODE_TO_REGION_CODE[calling_code]
    national = national_significant_number(number)
    region = None
    if len(regions) == 1:
        region = regions[0]
    else:  # as _region_code_for_number_from_list()
        for code in regions:
            metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
            if metadata is None:
                continue
            if metadata.leading_digits is not None:
                if re_compile(metadata.leading_digits).match(national):
                    region = code
                    break
                continue
            kind: int = _number_type_helper(national, metadata)
            if kind == PhoneNumberType.UNKNOWN:
                continue
            # Found by its type: the type the other two would match again, with this metadata.
            valid = metadata.country_code == calling_code
            return (code, kind) if valid else (None, PhoneNumberType.UNKNOWN)
        if region is None:
            return None, PhoneNumberType.UNKNOWN
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(calling_code, region)
    if metadata is None or (region != REGION_CODE_FOR_NON_GEO_ENTITY
                            and metadata.country_code != calling_code):
        return None, PhoneNumberType.UNKNOWN
    kind = _number_type_helper(national, metadata)
    return (region, kind) if kind != PhoneNumberType.UNKNOWN else (None, kind)


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
