"""The offline check: replay a JSON-lines file through the same core as the worker. No Kafka.

Each line is an outbound message, or an envelope {"topic", "key"?, "value", "headers"?,
"timestamp"?} for any input topic. On the state and catalog topics (and the webhooks topic) the
value may be Meta's webhook body, unchanged: its tenant is headers.tenant_id, else the tenant
map, as live. Lines are applied in file order; state events take effect at their own timestamps.
A Meta change that carries no time (a template status update without the entry's "time") takes
effect at the envelope's "timestamp" (the record time live), else --at, else the latest time the
file has reached. Meta's messaging-limit webhooks set their tenant's limit (the newest wins); rule
MESSAGING_LIMIT_REACHED runs after judge() with the tenant's slots of the last 24 hours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from processors.core import decode, step, webhooks
from processors.core.enrich import parse_recipient
from processors.core.judge import Verdict
from processors.core.policy import EMPTY, Policy, PolicySet, RecipientState, message_clock
from processors.core.policy import identity as ids
from processors.core.policy import messaging_limit as ml
from processors.core.policy import state as st
from processors.core.policy import templates as tpl
from processors.core.policy.state import REDUCERS, state_key
from processors.core.timeutil import BadTimestamp, format_rfc3339, parse_rfc3339
from processors.settings import Topics

CATALOG_CONTRACTS = frozenset({"template_entry", webhooks.TEMPLATE_UPDATE})


@dataclass
class TenantLimit:
    """A tenant's messaging limit as the check applied it (processors.core.policy.
    messaging_limit): slots open after its last send that needed one, the most at once."""

    limit: int
    used: int = 0
    peak: int = 0
    refused: int = 0  # sends that would have opened a slot beyond the limit


@dataclass
class Summary:
    decisions: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    monitored: Counter[str] = field(default_factory=Counter)
    # Rejections by recipient country and by template category ("none" for free-form).
    rejected_countries: Counter[str] = field(default_factory=Counter)
    rejected_categories: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    state_events: int = 0
    # Template sends decided while Meta had announced a category change not yet in effect.
    before_recategorization: int = 0
    # Per tenant whose messaging limit was in force (known and not unlimited) for a send.
    messaging_limits: dict[str, TenantLimit] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON (`check --json`)."""
        return {"decisions": dict(self.decisions), "rejected_by_code": dict(self.error_codes),
                "monitored": dict(self.monitored),
                "countries": {country: {"messages": count,
                                        "rejected": self.rejected_countries[country]}
                              for country, count in self.countries.items()},
                "rejected_by_category": dict(self.rejected_categories),
                "messaging_limits": {tenant: {"slots_used": use.used, "limit": use.limit,
                                              "peak": use.peak, "refused": use.refused}
                                     for tenant, use in sorted(self.messaging_limits.items())},
                "state_events": self.state_events,
                "before_recategorization": self.before_recategorization}

    def render(self) -> str:
        lines = ["decisions: " + (", ".join(f"{k}={v}" for k, v in sorted(self.decisions.items()))
                                  or "none")]
        total = sum(self.decisions.values()) or 1
        lines.append(f"{'rejected by code':<34}{'messages':>10}{'share':>8}")
        lines += [f"  {code:<32}{count:>10,}{count / total:>8.1%}"
                  for code, count in self.error_codes.most_common()]
        if self.countries:
            lines.append(f"{'by country':<34}{'messages':>10}{'rejected':>10}")
            lines += [f"  {country:<32}{count:>10,}{self.rejected_countries[country]:>10,}"
                      for country, count in self.countries.most_common(15)]
        if self.monitored:
            lines.append("monitor-mode rules that fired (not enforced):")
            lines += [f"  {code}: {count}" for code, count in self.monitored.most_common()]
        if self.messaging_limits:
            lines.append(f"{'messaging limits (24 h)':<26}{'slots used':>12}{'limit':>10}"
                         f"{'peak':>10}{'refused':>10}")
            lines += [f"  {tenant:<24}{use.used:>12,}{use.limit:>10,}{use.peak:>10,}"
                      f"{use.refused:>10,}"
                      for tenant, use in sorted(self.messaging_limits.items())]
        lines.append(f"state events applied: {self.state_events}")
        if self.before_recategorization:
            lines.append("template sends before an announced recategorisation: "
                         f"{self.before_recategorization}")
        return "\n".join(lines)


class OfflineCheck:
    def __init__(self, policies: PolicySet, topics: Topics | None = None,
                 at: float | None = None, max_bytes: int = decode.DEFAULT_MAX_BYTES,
                 tenant_map: Mapping[str, str] | None = None) -> None:
        self.policies = policies
        self.tenant_map = dict(tenant_map or {})
        self.reached = 0.0  # the latest time the file has reached (clocks, event times)
        self.at = at
        self.max_bytes = max_bytes
        # Default and configured topic names both work in envelopes.
        self.contracts = {**Topics().contracts(), **(topics or Topics()).contracts()}
        self.catalog: dict[str, tpl.TemplateHistory] = {}
        self.states: dict[str, RecipientState] = {}
        # Per tenant: the newest messaging limit Meta's webhooks stated (updated_at, limit;
        # None = unlimited), and the slots of its new users in the last 24 hours.
        self.limits: dict[str, tuple[float, int | None]] = {}
        self.slots: dict[str, ml.TenantSlots] = {}
        self.summary = Summary()

    def run(self, lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            result = self.line(number, line.rstrip(b"\r\n"))
            if result is not None:
                yield result

    def line(self, number: int, raw: bytes) -> dict[str, Any] | None:
        try:
            document = decode.parse_json(raw, self.max_bytes)
            if isinstance(document, dict) and "topic" in document and "message_id" not in document:
                message = self._envelope(document)
            else:
                message = decode.validate("outbound_message", document)
            return None if message is None else self._decide(number, message)
        except decode.DecodeError as exc:
            self.summary.decisions["dead_letter"] += 1
            return {"line": number, "decision": "dead_letter", "reason": exc.reason,
                    "error": str(exc)}

    def _envelope(self, envelope: dict[str, Any]) -> dict[str, Any] | None:
        topic = envelope["topic"]
        contract = self.contracts.get(topic) if isinstance(topic, str) else None
        if contract is None:
            raise decode.DecodeError("schema_invalid", f"envelope for unknown topic {topic!r}")
        value = envelope.get("value")
        if contract == "outbound_message":
            return decode.validate(contract, value)
        if contract == "template_entry" and value is None:
            self._tombstone(envelope.get("key"))
            return None
        documents = webhooks.read(contract, value, self._received_at(envelope),
                                  webhooks.header_tenant(envelope.get("headers")),
                                  self.tenant_map)
        for kind, document in documents:  # as live: each agent applies what is its own
            if kind in CATALOG_CONTRACTS and contract in ("template_entry", webhooks.WEBHOOK):
                self._template(document)
            elif kind in REDUCERS and contract != "template_entry":
                self._state_event(kind, document)
            elif kind == webhooks.MESSAGING_LIMIT and contract != "template_entry":
                self._messaging_limit(document)
        return None

    def _received_at(self, envelope: dict[str, Any]) -> float:
        stamp = envelope.get("timestamp")
        if stamp is not None:
            try:
                return parse_rfc3339(stamp)
            except BadTimestamp as exc:
                raise decode.DecodeError("schema_invalid", f"envelope timestamp: {exc}") from exc
        return self.at if self.at is not None else self.reached

    def _tombstone(self, key: Any) -> None:
        if not isinstance(key, str):
            raise decode.DecodeError("schema_invalid", "a catalog tombstone needs its key")
        self.catalog.pop(key, None)
        self.summary.state_events += 1

    def _template(self, entry: dict[str, Any]) -> None:
        key = tpl.catalog_key(entry["tenant_id"], entry["name"], entry["language"])
        self.catalog[key] = tpl.merge(self.catalog.get(key), entry)
        self.summary.state_events += 1

    def _messaging_limit(self, document: dict[str, Any]) -> None:
        """The newest limit wins, whatever order the webhooks arrive in (as live)."""
        tenant, at = document["tenant_id"], parse_rfc3339(document["updated_at"])
        known = self.limits.get(tenant)
        if known is None or at >= known[0]:
            self.limits[tenant] = (at, document["limit"])
        self.summary.state_events += 1

    def _state_event(self, contract: str, document: dict[str, Any]) -> None:
        reducer, field_name = REDUCERS[contract]
        recipient = parse_recipient(document[field_name]).identity
        if recipient is None:
            raise decode.DecodeError("schema_invalid", f"{field_name} is not a valid phone "
                                     "number or business-scoped user ID")
        tenant, at = document["tenant_id"], parse_rfc3339(document["timestamp"])
        # As live: an old number's events are its user's, and link nothing; a number change
        # naming it as the new number may make it head its user again.
        if self.states.get(state_key(tenant, recipient), EMPTY).home is None \
                or ids.changes_number(document):
            for kind, member in ids.named_links(document, document[field_name]):
                self._link(tenant, recipient, kind, member, at)
        key = state_key(tenant, recipient)
        self.states[key] = reducer(self.states.get(key, EMPTY), document)
        self.reached = max(self.reached, at)
        self.summary.state_events += 1

    def _link(self, tenant: str, number: str, kind: str, member: str, at: float) -> None:
        """Both sides of a link at once (live, each side is applied in its own partition)."""
        head_key = state_key(tenant, number)
        head = self.states.get(head_key, EMPTY)
        if kind == ids.PREVIOUS_NUMBER:
            head, former, stale = ids.becomes_head(head, at)
            if stale:  # the new number has moved on to another since
                return
            if former is not None:  # a change back: the number it followed lets it go
                former_key = state_key(tenant, former)
                self.states[former_key] = ids.unlink(self.states.get(former_key, EMPTY),
                                                     number)
        head, replaced, changed = ids.link(head, kind, member, at)
        self.states[head_key] = head
        if not changed:
            return
        if replaced is not None:  # the BSUID this number was linked to is on its own again
            old_key = state_key(tenant, replaced)
            old = self.states.get(old_key, EMPTY)
            if old.home is not None and old.home[0] == number:
                self.states[old_key] = ids.claim_released(old)
        member_key = state_key(tenant, member)
        claimed, previous, changed = ids.claim(self.states.get(member_key, EMPTY), number, at)
        if changed and claimed.links:  # an old number: it lets its own links go
            claimed = self._let_go(tenant, member, claimed, at)
        self.states[member_key] = claimed
        if not ids.follows(claimed, number):
            # A stale link: the BSUID follows a newer number (or the old number heads a later
            # change of its own), and this one lets it go.
            self.states[head_key] = ids.unlink(head, member)
        if previous is not None:  # the number the BSUID was linked to before lets it go
            previous_key = state_key(tenant, previous)
            self.states[previous_key] = ids.unlink(self.states.get(previous_key, EMPTY), member)

    def _let_go(self, tenant: str, old: str, state: RecipientState, at: float
                ) -> RecipientState:
        """As live (processors.runtime.gate.linking): a BSUID of the old number is on its own
        again with its own state; a number it replaced gives its history to the old number's
        record (which the user now counts) and is on its own again."""
        state, links = ids.follow(state)
        for kind, identity in links:
            key = state_key(tenant, identity)
            other = self.states.get(key, EMPTY)
            if ids.follows(other, old):
                other = ids.claim_released(other)
            if kind == ids.PREVIOUS_NUMBER:
                state = st.merge(state, other, at)
                other = replace(st.EMPTY, links=other.links, home=other.home)
            self.states[key] = other
        return state

    def _group(self, tenant: str, identity: str) -> tuple[list[str], str]:
        """The state keys of the user an identity belongs to (its head's first), and the head
        identity (the number a linked BSUID follows, else the identity itself)."""
        own = self.states.get(state_key(tenant, identity), EMPTY)
        head = own.home[0] if own.home is not None else identity
        head_state = self.states.get(state_key(tenant, head), EMPTY)
        keys = [state_key(tenant, head)]
        for member in ids.members(head_state):
            home = self.states.get(state_key(tenant, member), EMPTY).home
            if home is not None and home[0] == head:
                keys.append(state_key(tenant, member))
        return keys, head

    def _slots(self, message: dict[str, Any], verdict: Verdict, limit: int, policy: Policy,
               clock: float, user: str) -> tuple[Verdict, bool]:
        """The tenant's slots, in memory, admit the send or refuse it (MESSAGING_LIMIT_REACHED);
        returns the verdict and whether the send opened a slot."""
        tenant = message["tenant_id"]
        slots = self.slots.setdefault(tenant, ml.TenantSlots())
        admission = slots.admit(user, clock, limit)
        use = self.summary.messaging_limits.setdefault(tenant, TenantLimit(limit))
        use.limit, use.used = limit, slots.used(clock)
        use.peak = max(use.peak, use.used)
        use.refused += not admission.admitted
        return step.settle(verdict, admission, message, policy, clock), admission.opens_slot

    def _decide(self, number: int, message: dict[str, Any]) -> dict[str, Any]:
        clock = message_clock(message, self.at)
        self.reached = max(self.reached, clock)
        entry = None
        if message["kind"] == "template":
            template = message["template"]
            key = tpl.catalog_key(message["tenant_id"], template["name"], template["language"])
            entry = tpl.entry_at(self.catalog.get(key), clock)
            if tpl.pending_category(self.catalog.get(key), clock) is not None:
                self.summary.before_recategorization += 1
        tenant = message["tenant_id"]
        identity = parse_recipient(message["recipient"], message.get("recipient_region")).identity
        user = None
        if identity is not None:
            keys, head = self._group(tenant, identity)
            user = step.User(head, self.states.get(keys[0], EMPTY),
                             st.combine([self.states.get(key, EMPTY) for key in keys], clock),
                             identity)
        policy = self.policies.for_tenant(tenant)
        learned = self.limits.get(tenant)
        # The offline check judges every line: a repeated message_id is not dropped (dedup off).
        decided = step.decide(message, user, entry, None, policy, clock,
                              lambda: (learned[1] if learned else None, learned is not None),
                              dedup=False)
        assert decided.verdict is not None  # only de-duplication drops a message
        verdict, opened = decided.verdict, False
        if decided.slot_limit is not None and user is not None:
            verdict, opened = self._slots(message, verdict, decided.slot_limit, policy, clock,
                                          keys[0])
        if user is not None:  # the head of the user's identities keeps its record, as live
            self.states[keys[0]] = step.recorded(user.record, message, verdict, policy, clock,
                                                 False, opened)
        decision, enrichment = verdict.decision, verdict.enrichment
        outcome = "accepted" if decision.accepted else "rejected"
        self.summary.decisions[outcome] += 1
        country = enrichment.recipient.region or "unknown"
        self.summary.countries[country] += 1
        if decision.error_code:
            self.summary.error_codes[decision.error_code] += 1
            self.summary.rejected_countries[country] += 1
            self.summary.rejected_categories[enrichment.template_category or "none"] += 1
        self.summary.monitored.update(decision.monitored)
        return {
            "line": number,
            "message_id": message["message_id"],
            "tenant_id": message["tenant_id"],
            "decision": outcome,
            "error_code": decision.error_code,
            "meta_error_code": decision.meta_error_code,
            "reason": decision.reason,
            "retryable": decision.retryable,
            "retry_after": format_rfc3339(decision.retry_after) if decision.retry_after else None,
            "violations": list(decision.violations),
            "monitored": list(decision.monitored),
            "enrichment": enrichment.as_dict(),
            "policy": {"id": decision.policy_id, "version": decision.policy_version},
            "clock": format_rfc3339(clock),
        }

