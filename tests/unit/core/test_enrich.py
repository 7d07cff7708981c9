"""Number handling and category resolution (processors.core.enrich), with no broker."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import NumberParseException, PhoneNumberType

from processors.core.enrich import parse_recipient, region_and_type, resolve_category
from tests.factories import message, template_entry


@pytest.mark.parametrize(
    ("recipient", "hint", "e164", "region"),
    [
        ("+14165550123", None, "+14165550123", "CA"),  # E.164, Toronto
        ("14165550123", None, "+14165550123", "CA"),  # wa_id digits read as international
        ("12025550143", None, "+12025550143", "US"),
        ("+1 (202) 555-0143", None, "+12025550143", "US"),  # formatting stripped
        ("2025550143", "US", "+12025550143", "US"),  # national with a region hint
        ("07400 123456", "GB", "+447400123456", "GB"),
        ("07400123456", "gb", "+447400123456", "GB"),  # hint case-insensitive
        ("+18005550199", None, "+18005550199", "US"),  # US toll-free is US for libphonenumber
        ("+17875550123", None, "+17875550123", "PR"),  # +1 but Puerto Rico
        ("+13405550123", None, "+13405550123", "VI"),
        ("+16715550123", None, "+16715550123", "GU"),
        ("+16845550123", None, None, None),  # not allocated in American Samoa's plan
        ("+16847331234", None, "+16847331234", "AS"),
        ("+16705550123", None, "+16705550123", "MP"),
        ("+12423571234", None, "+12423571234", "BS"),  # +1, the Bahamas
        ("+5511912345678", None, "+5511912345678", "BR"),
    ],
)
def test_parse_recipient(recipient: str, hint: str | None, e164: str | None,
                         region: str | None) -> None:
    parsed = parse_recipient(recipient, hint)
    assert parsed.e164 == e164
    assert parsed.region == region


def test_number_type_and_calling_code() -> None:
    toll_free = parse_recipient("+18005550199")
    assert (toll_free.calling_code, toll_free.number_type) == (1, "TOLL_FREE")
    mobile = parse_recipient("+447400123456")
    assert (mobile.calling_code, mobile.number_type) == (44, "MOBILE")


def _libphonenumber_says(number: phonenumbers.PhoneNumber) -> tuple[str | None, int]:
    """What the public calls say (the way _parse_number asked them before region_and_type)."""
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return None, PhoneNumberType.UNKNOWN
    return region, phonenumbers.number_type(number)


def test_region_and_type_agrees_with_libphonenumber() -> None:
    # An example number of every type of every region and non-geographic code, and changed
    # digits of each (many then invalid, or in another region of a shared calling code).
    texts = []
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in range(12):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                texts.append(phonenumbers.format_number(example, 0))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            texts.append(phonenumbers.format_number(example, 0))
    rng = random.Random(7)
    for text in list(texts):
        for _ in range(4):
            at = rng.randrange(2, len(text))
            texts.append(text[:at] + str(rng.randrange(10)) + text[at + 1:])
    texts += ["+12025550143", "+14165550123", "+16845550123", "+8005550199", "+3906123456"]
    checked = valid = 0
    for text in texts:
        try:
            number = phonenumbers.parse(text)
        except NumberParseException:
            continue
        expected = _libphonenumber_says(number)
        assert region_and_type(number) == expected, text
        checked += 1
        valid += expected[0] is not None
    assert checked > 5000 and 0 < valid < checked


@pytest.mark.parametrize("bad", ["+1202555", "hello", "+999123456789", "", "0000"])
def test_invalid_numbers(bad: str) -> None:
    parsed = parse_recipient(bad)
    assert not parsed.valid
    assert parsed.e164 is None and parsed.problem


def test_national_number_without_hint_is_read_as_international() -> None:
    # "2025550143" as wa_id digits is +20 25550143 (Egypt), not the US number.
    assert parse_recipient("2025550143").region != "US"


def test_category_catalog_beats_declared() -> None:
    doc = message(template={"name": "t", "language": "en", "category": "UTILITY"})
    assert resolve_category(doc, template_entry(category="MARKETING")) == ("MARKETING", "catalog")


def test_category_declared_when_not_in_catalog() -> None:
    doc = message(template={"name": "t", "language": "en", "category": "AUTHENTICATION"})
    assert resolve_category(doc, None) == ("AUTHENTICATION", "declared")


def test_category_defaults_to_marketing() -> None:
    assert resolve_category(message(), None) == ("MARKETING", "default")


def test_free_form_has_no_category() -> None:
    assert resolve_category(message(kind="free_form", template=None), None) == (None, None)


def test_a_lower_case_bsuid_is_the_same_user() -> None:
    from processors.core.enrich import PARENT_BSUID, parse_recipient

    parent = parse_recipient("ca.ent.1181579921")
    assert (parent.identity, parent.kind, parent.region) == ("CA.ENT.1181579921", PARENT_BSUID,
                                                             "CA")
    assert parse_recipient("ca.13491208655").identity == "CA.13491208655"
