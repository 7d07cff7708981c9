"""A realistic, seeded workload for benchmarks and load tests. Pure: yields records, sends none.

50 tenants and 200,000 recipients, both Zipf-distributed; recipients 30% US, 8% Canada, the
rest over 30 other countries; messages 60% marketing / 30% utility / 5% authentication /
5% free-form; 1% malformed; status, inbound and preference events at 5% of the message rate;
and a template catalog per tenant. Keys are "tenant_id:+E164", the way the gate keys state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

import orjson
import phonenumbers

from processors.timeutil import format_rfc3339

OTHER_REGIONS = ["BR", "IN", "MX", "ID", "NG", "DE", "GB", "FR", "ES", "IT", "CO", "AR", "ZA",
                 "EG", "TR", "PK", "PH", "VN", "KE", "SA", "AE", "MY", "PE", "CL", "NL", "PL",
                 "TH", "JP", "KR", "RU"]
MARKETING = ["spring_sale", "flash_offer", "newsletter", "winback"]
MALFORMED = [b"{not json", b"", b"[]", b'{"message_id": 7}', b"\xff\xfe\xfd",
             b'{"tenant_id": "t", "kind": "template"}']


@dataclass(frozen=True, slots=True)
class Record:
    topic: str  # a field name of processors.settings.Topics
    key: bytes | None
    value: bytes | None


def _zipf_cumulative(size: int, exponent: float) -> list[float]:
    return list(accumulate(1.0 / (rank ** exponent) for rank in range(1, size + 1)))


def _numbers(rng: random.Random, region: str, count: int) -> list[str]:
    """count distinct valid mobile numbers of a region, varying the example number's tail."""
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None, f"libphonenumber has no example mobile for {region}"
    base = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    found: set[str] = set()
    attempts = 0
    while len(found) < count and attempts < count * 20:
        attempts += 1
        candidate = base[:-5] + f"{rng.randrange(100_000):05d}"
        if candidate not in found and phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            found.add(candidate)
    return sorted(found)


class Workload:
    def __init__(self, seed: int = 42, tenants: int = 50, recipients: int = 200_000) -> None:
        self.rng = random.Random(seed)
        self.tenants = [f"tenant-{i:03d}" for i in range(tenants)]
        us = round(recipients * 0.30)
        ca = round(recipients * 0.08)
        per_other = -(-(recipients - us - ca) // len(OTHER_REGIONS))
        pool = _numbers(self.rng, "US", us) + _numbers(self.rng, "CA", ca)
        for region in OTHER_REGIONS:
            pool += _numbers(self.rng, region, per_other)
        self.rng.shuffle(pool)
        self.recipients = pool[:recipients]
        self._tenant_weights = _zipf_cumulative(len(self.tenants), 1.1)
        self._recipient_weights = _zipf_cumulative(len(self.recipients), 0.9)
        self.sequence = 0

    def catalog(self, now: float) -> Iterator[Record]:
        updated = format_rfc3339(now - 86_400)
        for tenant in self.tenants:
            rows = [(name, "MARKETING", "APPROVED") for name in MARKETING]
            rows[-1] = (MARKETING[-1], "MARKETING", "PAUSED")
            rows += [("order_update", "UTILITY", "APPROVED"),
                     ("login_code", "AUTHENTICATION", "APPROVED")]
            for name, category, status in rows:
                entry = {"tenant_id": tenant, "name": name, "language": "en_US",
                         "category": category, "status": status, "updated_at": updated}
                yield Record("templates", f"{tenant}:{name}:en_US".encode(),
                             orjson.dumps(entry))

    def _pick(self) -> tuple[str, str]:
        tenant = self.rng.choices(self.tenants, cum_weights=self._tenant_weights)[0]
        recipient = self.rng.choices(self.recipients, cum_weights=self._recipient_weights)[0]
        return tenant, recipient

    def _message(self, tenant: str, e164: str, now: float) -> bytes:
        self.sequence += 1
        roll = self.rng.random()
        message: dict[str, object] = {
            "schema_version": 1,
            "message_id": f"lg-{self.sequence:09d}",
            "tenant_id": tenant,
            # Upstream sends either form: E.164 or Meta's wa_id digits.
            "recipient": e164 if self.sequence % 2 else e164[1:],
            "kind": "template",
            "origin": self.rng.choice(["api", "automation", "agent", "bulk"]),
            "created_at": format_rfc3339(now),
            "context": {"campaign_id": f"c-{self.sequence % 97}"},
        }
        if roll < 0.60:
            message["template"] = {"name": self.rng.choice(MARKETING), "language": "en_US"}
        elif roll < 0.90:
            message["template"] = {"name": "order_update", "language": "en_US",
                                   "category": "UTILITY"}
        elif roll < 0.95:
            message["template"] = {"name": "login_code", "language": "en_US"}
        else:
            message["kind"] = "free_form"
        return orjson.dumps(message)

    def _state_event(self, tenant: str, e164: str, now: float) -> Record:
        stamp = format_rfc3339(now - self.rng.uniform(0, 7200))
        key = f"{tenant}:{e164}".encode()
        roll = self.rng.random()
        if roll < 0.5:
            return Record("inbound", key, orjson.dumps(
                {"tenant_id": tenant, "sender": e164[1:], "timestamp": stamp}))
        if roll < 0.85:
            code = self.rng.choice([131049, 131049, 131050, 131026])
            status = {"tenant_id": tenant, "recipient": e164[1:], "status": "failed",
                      "timestamp": stamp, "errors": [{"code": code}]}
            return Record("statuses", key, orjson.dumps(status))
        preference = self.rng.choice(["stop", "resume"])
        return Record("preferences", key, orjson.dumps(
            {"tenant_id": tenant, "recipient": e164, "preference": preference,
             "timestamp": stamp}))

    def events(self, count: int, now: float) -> Iterator[Record]:
        """count input records: messages, with state events (5%) and malformed ones (1%)."""
        for _ in range(count):
            tenant, e164 = self._pick()
            roll = self.rng.random()
            if roll < 0.01:
                yield Record("outbound", f"{tenant}:{e164}".encode(),
                             self.rng.choice(MALFORMED))
            elif roll < 0.0575:  # 5% of the message rate
                yield self._state_event(tenant, e164, now)
            else:
                yield Record("outbound", f"{tenant}:{e164}".encode(),
                             self._message(tenant, e164, now))
