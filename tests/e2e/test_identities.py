"""A user known by a phone number and a BSUID, with the two on partitions of different workers:
state reported for either identity applies to sends to the other, through a worker's SIGKILL."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from processors.core.enrich import parse_recipient
from processors.runtime.engine.partitioner import partition_for
from tests.e2e.test_live_state import code, free_form, now_rfc3339, outbound, send_until
from tests.e2e.two_workers import PARTITIONS, owned, start_two, stream_through_sigkill
from tests.factories import inbound, preference

pytestmark = pytest.mark.e2e

TENANT = "identities"


def user_on_two_halves() -> tuple[str, str]:
    """A number (wa_id digits) and a BSUID whose partitions fall in different halves, so two
    workers of one group own them: one holds partitions 0-1, the other 2-3."""
    rng = random.Random()
    while True:
        number = f"55119{rng.randint(60_000_000, 99_999_999)}"
        e164 = parse_recipient(number).e164
        if e164 is None:
            continue
        bsuid = f"BR.{rng.randint(10**15, 10**16)}"
        half = partition_for(f"{TENANT}:{e164}", PARTITIONS) // 2
        if partition_for(f"{TENANT}:{bsuid}", PARTITIONS) // 2 != half:
            return number, bsuid


def test_linked_identities_across_workers_through_a_sigkill(bootstrap: str,
                                                          tmp_path: Path) -> None:
    first, second = start_two(bootstrap, tmp_path, uuid.uuid4().hex[:10])
    number, bsuid = user_on_two_halves()
    e164 = parse_recipient(number).e164
    assert e164 is not None
    number_partition = partition_for(f"{TENANT}:{e164}", PARTITIONS)
    bsuid_partition = partition_for(f"{TENANT}:{bsuid}", PARTITIONS)
    assert (number_partition in owned(first)) != (bsuid_partition in owned(first)), \
        "the number and the BSUID should be on different workers"
    reader = first.reader()

    # The opt-out is reported for the BSUID alone (a user with a username, no number).
    first.send(first.topics.preferences, bsuid,
               preference(bsuid, "stop", now_rfc3339(), TENANT))
    # Then the user writes from the number, and Meta's webhook names both: a link.
    first.send(first.topics.inbound, number,
               {**inbound(number, now_rfc3339(), TENANT), "user_id": bsuid})
    blocked = send_until(first, reader, lambda: outbound(number, TENANT),
                         lambda o: code(o) == "MARKETING_OPTED_OUT", 90,
                         "marketing to the number refused for the BSUID's opt-out")
    assert blocked.value["enrichment"]["recipient_kind"] == "phone"
    window = send_until(first, reader, lambda: free_form(bsuid, TENANT),
                        lambda o: code(o) is None, 60,
                        "free-form to the BSUID accepted in the window the number opened")
    assert window.value["enrichment"]["recipient_kind"] == "bsuid"
    assert window.value["enrichment"]["recipient_e164"] == e164

    # A stream to both identities; the worker owning the number's partition dies mid-stream.
    def message(index: int) -> tuple[dict[str, Any], str | None]:
        return (outbound(number, TENANT), "MARKETING_OPTED_OUT") if index % 2 \
            else (free_form(bsuid, TENANT), None)

    stream_through_sigkill(
        first, second, reader, first if number_partition in owned(first) else second, message,
        lambda: [outbound(number, TENANT), free_form(bsuid, TENANT)])
    reader.close()
