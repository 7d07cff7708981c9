"""decide(): the gate's whole judgement as one pure function. No Kafka, no asyncio, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from processors.core.enrich import Recipient, parse_recipient, resolve_category
from processors.core.frozen import quick_init
from processors.core.policy.codes import BY_CODE
from processors.core.policy.document import Policy
from processors.core.policy.rules import RULES, Facts, Predicate
from processors.core.policy.state import RecipientState
from processors.core.timeutil import parse_rfc3339


@quick_init
@dataclass(frozen=True, slots=True)
class Enrichment:
    recipient: Recipient
    template_category: str | None
    category_source: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipient_e164": self.recipient.e164,
            "recipient_kind": self.recipient.kind,
            "recipient_region": self.recipient.region,
            "calling_code": self.recipient.calling_code,
            "number_type": self.recipient.number_type,
            "template_category": self.template_category,
            "category_source": self.category_source,
            "send_endpoint": send_endpoint(self.template_category),
        }


MARKETING_ENDPOINT, MESSAGES_ENDPOINT = "marketing_messages", "messages"


def send_endpoint(category: str | None) -> str:
    """The Cloud API endpoint a message must go through, from the category the gate decided
    on: Meta's "Route template messages by category" sends MARKETING templates to
    /<PHONE_NUMBER_ID>/marketing_messages and every other message to /messages."""
    return MARKETING_ENDPOINT if category == "MARKETING" else MESSAGES_ENDPOINT


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    error_code: str | None
    meta_error_code: int | None
    reason: str | None
    retryable: bool
    retry_after: float | None
    violations: tuple[str, ...]  # enforced rules that fired, in precedence order
    monitored: tuple[str, ...]  # rules in monitor mode that fired: counted, not enforced
    policy_id: str
    policy_version: str


def enrich(message: dict[str, Any], catalog_entry: dict[str, Any] | None,
           linked_e164: str | None = None) -> Enrichment:
    """linked_e164: the number a BSUID recipient is linked to, when the gate knows it."""
    recipient = parse_recipient(message["recipient"], message.get("recipient_region"))
    if linked_e164 is not None and recipient.e164 is None and recipient.valid:
        recipient = replace(recipient, e164=linked_e164)
    category, source = resolve_category(message, catalog_entry)
    return Enrichment(recipient, category, source)


def message_clock(message: dict[str, Any], fixed: float | None = None) -> float:
    """Replay clock (DESIGN §4): a fixed time if given, else scheduled_at, else created_at."""
    if fixed is not None:
        return fixed
    return parse_rfc3339(message.get("scheduled_at") or message["created_at"])


# A rule in force: (code, predicate, in monitor mode).
InForce = tuple[tuple[str, Predicate, bool], ...]
# id(policy) -> (policy, clock, its rules in force then): the live worker decides a whole batch
# at one clock, and looking up and checking all the rules' settings per decision cost more than
# a lookup here. Bounded: cleared when it holds more policies than a policy document has.
_IN_FORCE: dict[int, tuple[Policy, float, InForce]] = {}
_IN_FORCE_MAX = 256


def rules_in_force(policy: Policy, clock: float) -> InForce:
    """The rules active at the clock, in precedence order."""
    known = _IN_FORCE.get(id(policy))
    if known is not None and known[0] is policy and known[1] == clock:
        return known[2]
    settings = policy.rules
    active = tuple((code, predicate, settings[code].mode == "monitor")
                   for code, predicate in RULES if settings[code].active_at(clock))
    if len(_IN_FORCE) >= _IN_FORCE_MAX:
        _IN_FORCE.clear()
    _IN_FORCE[id(policy)] = (policy, clock, active)
    return active


def decide(
    message: dict[str, Any],
    enrichment: Enrichment,
    state: RecipientState,
    catalog_entry: dict[str, Any] | None,
    policy: Policy,
    clock: float,
) -> Decision:
    status = catalog_entry.get("status") if catalog_entry and message.get("kind") == "template" \
        else None
    facts = Facts(message, enrichment.recipient, enrichment.template_category, status, state,
                  clock)
    violations: list[str] = []
    monitored: list[str] = []
    retry_after = None
    parameters = policy.parameters
    for code, predicate, monitor in rules_in_force(policy, clock):
        fired = predicate(facts, parameters)
        if fired is None:
            continue
        if monitor:
            monitored.append(code)
            continue
        if not violations:
            retry_after = fired.retry_after
        violations.append(code)
    if retry_after is None:
        return _decision(tuple(violations), tuple(monitored), policy.id, policy.version)
    first = BY_CODE[violations[0]]
    return Decision(False, first.code, first.meta_error_code, first.reason, first.retryable,
                    retry_after, tuple(violations), tuple(monitored), policy.id, policy.version)


@lru_cache(maxsize=4096)
def _decision(violations: tuple[str, ...], monitored: tuple[str, ...], policy_id: str,
              policy_version: str) -> Decision:
    """A decision without a retry time: one of few, and immutable, so made once and shared
    (building the ten-field frozen dataclass cost more than the cache lookup)."""
    if not violations:
        return Decision(True, None, None, None, False, None, (), monitored, policy_id,
                        policy_version)
    first = BY_CODE[violations[0]]
    return Decision(False, first.code, first.meta_error_code, first.reason, first.retryable,
                    None, violations, monitored, policy_id, policy_version)
