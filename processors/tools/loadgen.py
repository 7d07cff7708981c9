"""A realistic, seeded workload for benchmarks and load tests. Pure: yields records, sends none.

50 tenants and 200,000 recipients, both Zipf-distributed; recipients 30% US, 8% Canada, the
rest over 30 other countries; messages 60% marketing / 30% utility / 5% authentication /
5% free-form; 1% malformed; status, inbound and preference events at 5% of the message rate;
and a template catalog per tenant.

Identities (Meta's business-scoped user IDs, BSUIDs): every recipient has a BSUID derived from
the seed and its number, "<region>.<20 digits>" (the region libphonenumber gives the number),
and a parent BSUID "<region>.ENT.<20 digits>" used by the tenants of a linked portfolio (those
whose number ends in 3: tenant-003, tenant-013, ...). 2% of the recipients are username users,
known only by their BSUID: every message and state event names them by it. 10% of the messages
(in expectation) are addressed to a BSUID, a quarter of those of a portfolio tenant to the
parent BSUID: all the username users' messages (about 2% of the messages, more when a busy
recipient is one of them) and as many of the other users' as make 10% in all (about 8% of
theirs). Authentication templates to a BSUID are then refused as BSUID_RECIPIENT_UNSUPPORTED,
as Meta refuses them (131062). Of the other users' state events, 25% link the number to the
BSUID (the number as recipient or sender and the BSUID in "user_id", plus the parent BSUID in
"parent_user_id" for a portfolio tenant), 10% name the BSUID alone (no number) and 65% the
number alone; all in all about 24% of the state events link and 12-14% name a BSUID alone.

Number changes: 5% of the state events of users with a number (about 0.25% of the records) are
instead Meta's user_changed_number, as the gate's inbound_message of channel "system": the user
moves, once, to a new number no other recipient has, at the time the workload is generated
(after every state event it holds). Afterwards half of what names the user's number alone
(messages, state events without a BSUID) names the new number, so that sends to the new number
see what was reported for the old one. Drawn from a random stream of their own: the rest of the
workload is the same records as without them.

Keys are "tenant_id:<identity>", the E.164 number or the BSUID the record is about, the way the
gate keys state. The same seed gives the same records; bsuid_share=0 gives the phone-only
workload (no BSUID anywhere, no username users).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate

import orjson
import phonenumbers

from processors.core.timeutil import format_rfc3339

OTHER_REGIONS = ["BR", "IN", "MX", "ID", "NG", "DE", "GB", "FR", "ES", "IT", "CO", "AR", "ZA",
                 "EG", "TR", "PK", "PH", "VN", "KE", "SA", "AE", "MY", "PE", "CL", "NL", "PL",
                 "TH", "JP", "KR", "RU"]
MARKETING = ["spring_sale", "flash_offer", "newsletter", "winback"]
MALFORMED = [b"{not json", b"", b"[]", b'{"message_id": 7}', b"\xff\xfe\xfd",
             b'{"tenant_id": "t", "kind": "template"}']
# The identity mix (see the docstring).
BSUID_SHARE = 0.10  # of the messages, addressed to a BSUID or parent BSUID
USERNAME_USERS = 0.02  # of the recipients, known by their BSUID alone
PARENT_SHARE = 0.25  # of a portfolio tenant's BSUID-addressed records, the parent BSUID
LINKING = 0.25  # of the state events of users with a number: number + BSUID
BSUID_ONLY = 0.10  # of the state events of users with a number: the BSUID alone
NUMBER_CHANGES = 0.05  # of the state events of users with a number: user_changed_number


@dataclass(frozen=True, slots=True)
class Record:
    topic: str  # a field name of processors.settings.Topics
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class User:
    """The identities of one recipient: its number, BSUID and parent BSUID."""

    e164: str
    bsuid: str
    parent: str
    username: bool  # known only by BSUID: no number in anything that names them


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


def _digest(seed: int, e164: str) -> bytes:
    """Per recipient and seed, stable across runs and Python versions (no hash()): 8 bytes
    for the BSUID, 8 for the parent BSUID, 2 to choose the username users."""
    return hashlib.blake2b(f"{seed}:{e164}".encode(), digest_size=18).digest()


def _is_username_user(digest: bytes, share: float) -> bool:
    return int.from_bytes(digest[16:18], "big") < share * 65_536


class Workload:
    def __init__(self, seed: int = 42, tenants: int = 50, recipients: int = 200_000,
                 bsuid_share: float = BSUID_SHARE,
                 number_changes: float = NUMBER_CHANGES) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.tenants = [f"tenant-{i:03d}" for i in range(tenants)]
        # Tenants of a linked business portfolio: Meta names their users by parent BSUID too.
        self.portfolio = frozenset(t for i, t in enumerate(self.tenants) if i % 10 == 3)
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
        self.bsuid_share = bsuid_share
        self._username_share = USERNAME_USERS if bsuid_share > 0 else 0.0
        self._users: dict[str, User] = {}
        self._usernames: dict[str, bool] = {}
        # Username users' messages all go to their BSUID: the other users' messages go to it
        # with the probability that makes bsuid_share of all messages (recipients are Zipf, so
        # the username users' share of the messages is their share of the weights).
        username_weight = 0.0
        if self._username_share:
            previous = 0.0
            for e164, cumulative in zip(self.recipients, self._recipient_weights, strict=True):
                if _is_username_user(_digest(seed, e164), self._username_share):
                    username_weight += cumulative - previous
                previous = cumulative
            username_weight /= self._recipient_weights[-1]
        self.username_weight = username_weight
        self._to_bsuid = max(0.0, (bsuid_share - username_weight) / (1.0 - username_weight)) \
            if bsuid_share > 0 else 0.0
        # Number changes: (tenant, old E.164) -> new E.164; their own random stream.
        self.moved: dict[tuple[str, str], str] = {}
        self._changes = random.Random(seed ^ 0x33)
        self.number_changes = number_changes
        self._taken = set(self.recipients)

    def user(self, e164: str) -> User:
        """The identities of a recipient of the pool (deterministic for the seed)."""
        known = self._users.get(e164)
        if known is None:
            digest = _digest(self.seed, e164)
            region = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
            own = int.from_bytes(digest[:8], "big") % 10**20
            parent = int.from_bytes(digest[8:16], "big") % 10**20
            known = self._users[e164] = User(
                e164, f"{region}.{own:020d}", f"{region}.ENT.{parent:020d}",
                self.username_user(e164))
        return known

    def username_user(self, e164: str) -> bool:
        """Is this recipient known by BSUID alone? (Cheaper than user(): no parsing.)"""
        known = self._usernames.get(e164)
        if known is None:
            known = self._usernames[e164] = bool(self._username_share) and _is_username_user(
                _digest(self.seed, e164), self._username_share)
        return known

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

    def _bsuid_of(self, tenant: str, user: User) -> str:
        """The BSUID a record names the user by: the parent one now and then in a portfolio."""
        if tenant in self.portfolio and self.rng.random() < PARENT_SHARE:
            return user.parent
        return user.bsuid

    def _addressee(self, tenant: str, e164: str) -> str:
        """The identity a message is addressed to: E.164 or a BSUID."""
        if self.username_user(e164) or (self._to_bsuid and self.rng.random() < self._to_bsuid):
            return self._bsuid_of(tenant, self.user(e164))
        return e164

    def _message(self, tenant: str, identity: str, now: float) -> bytes:
        self.sequence += 1
        roll = self.rng.random()
        recipient = identity
        if identity.startswith("+") and not self.sequence % 2:
            recipient = identity[1:]  # upstream sends either form: E.164 or Meta's wa_id digits
        message: dict[str, object] = {
            "schema_version": 1,
            "message_id": f"lg-{self.sequence:09d}",
            "tenant_id": tenant,
            "recipient": recipient,
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
        """A status, inbound message or preference naming the user by number, by BSUID alone,
        or by both (which links them)."""
        stamp = format_rfc3339(now - self.rng.uniform(0, 7200))
        links: dict[str, str] = {}
        identity = e164
        if self.bsuid_share > 0:
            user = self.user(e164)
            if user.username:
                identity = self._bsuid_of(tenant, user)
            else:
                roll = self.rng.random()
                if roll < LINKING:
                    links["user_id"] = user.bsuid
                    if tenant in self.portfolio:
                        links["parent_user_id"] = user.parent
                elif roll < LINKING + BSUID_ONLY:
                    identity = self._bsuid_of(tenant, user)
        # Meta's webhooks name a number by its wa_id (digits) and a BSUID as it is.
        named = identity[1:] if identity.startswith("+") else identity
        key = f"{tenant}:{identity}".encode()
        roll = self.rng.random()
        if roll < 0.5:
            # A tenth of the users who reach the business call it (user-initiated), which
            # opens the window as a message does.
            channel = {"channel": "call"} if roll < 0.05 else {}
            return Record("inbound", key, orjson.dumps(
                {"tenant_id": tenant, "sender": named, "timestamp": stamp, **channel,
                 **links}))
        if roll < 0.85:
            # 130472: Meta's marketing experiment, which holds marketing to the user back
            code = self.rng.choice([131049, 131049, 131050, 131026, 130472])
            status = {"tenant_id": tenant, "recipient": named, "status": "failed",
                      "timestamp": stamp, "errors": [{"code": code}], **links}
            return Record("statuses", key, orjson.dumps(status))
        preference = self.rng.choice(["stop", "resume"])
        return Record("preferences", key, orjson.dumps(
            {"tenant_id": tenant, "recipient": identity, "preference": preference,
             "timestamp": stamp, **links}))

    def _number_change(self, tenant: str, e164: str, now: float) -> Record | None:
        """The user moves to a new number (once): Meta's user_changed_number, as the gate's
        document. None when the user is not one to move."""
        if (tenant, e164) in self.moved or self.username_user(e164) \
                or self._changes.random() >= self.number_changes:
            return None
        number = phonenumbers.parse(e164)
        for _ in range(20):
            candidate = phonenumbers.PhoneNumber(
                country_code=number.country_code,
                national_number=(number.national_number or 0) // 10_000 * 10_000
                + self._changes.randrange(10_000))
            new = phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
            if new not in self._taken and phonenumbers.is_valid_number(candidate):
                break
        else:
            return None
        self._taken.add(new)
        self.moved[(tenant, e164)] = new
        return Record("inbound", f"{tenant}:{new}".encode(), orjson.dumps(
            {"tenant_id": tenant, "sender": new[1:], "previous_number": e164[1:],
             "channel": "system", "timestamp": format_rfc3339(now)}))

    def _now_at(self, tenant: str, e164: str) -> str:
        """The number a record naming the user's number alone names: the new one half the
        time once the user has moved."""
        new = self.moved.get((tenant, e164))
        return new if new is not None and self._changes.random() < 0.5 else e164

    def events(self, count: int, now: float) -> Iterator[Record]:
        """count input records: messages, with state events (5%) and malformed ones (1%)."""
        for _ in range(count):
            tenant, e164 = self._pick()
            roll = self.rng.random()
            if roll < 0.01:
                identity = self._addressee(tenant, e164)
                yield Record("outbound", f"{tenant}:{identity}".encode(),
                             self.rng.choice(MALFORMED))
            elif roll < 0.0575:  # 5% of the message rate
                event = self._state_event(tenant, e164, now)
                change = self._number_change(tenant, e164, now)
                if change is not None:
                    yield change
                elif (tenant, e164) in self.moved and event.key == f"{tenant}:{e164}".encode() \
                        and b'"user_id"' not in (event.value or b""):
                    number = self._now_at(tenant, e164)
                    yield Record(event.topic, f"{tenant}:{number}".encode(), (event.value or b"")
                                 .replace(e164[1:].encode(), number[1:].encode()))
                else:
                    yield event
            else:
                identity = self._addressee(tenant, e164)
                if identity == e164:
                    identity = self._now_at(tenant, e164)
                yield Record("outbound", f"{tenant}:{identity}".encode(),
                             self._message(tenant, identity, now))


def identity_mix(records: Iterable[Record]) -> dict[str, int]:
    """What a workload holds, by identity: from the keys (tenant:<identity>) and a glance at the
    values (a linking event names "user_id")."""
    counts = {"records": 0, "outbound": 0, "outbound_to_bsuid": 0, "state_events": 0,
              "state_linking": 0, "state_bsuid_only": 0, "state_number_changes": 0}
    for record in records:
        counts["records"] += 1
        to_bsuid = record.key is not None and not record.key.split(b":", 1)[-1].startswith(b"+")
        if record.topic == "outbound":
            counts["outbound"] += 1
            counts["outbound_to_bsuid"] += to_bsuid
        elif record.topic != "templates":
            counts["state_events"] += 1
            counts["state_bsuid_only"] += to_bsuid
            counts["state_linking"] += b'"user_id"' in (record.value or b"")
            counts["state_number_changes"] += b'"previous_number"' in (record.value or b"")
    return counts
