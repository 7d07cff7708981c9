"""Per-(tenant, recipient) state and how state events change it. Pure.

State events take effect at their own timestamps (DESIGN §4): each field keeps a short,
time-sorted history so that a decision sees the state as of its clock, whatever order the
events arrived in.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, TypeVar

import orjson

from processors.core.frozen import quick_init
from processors.core.timeutil import parse_rfc3339

# Enough to answer "as of the clock" for messages near the newest events, and bounded.
MAX_HISTORY = 8
# Decided message ids kept per recipient, to drop redelivered input (rebalances, restarts).
MAX_DECIDED = 32
LIMIT_ERROR = 131049  # per-user marketing limit
STOP_ERROR = 131050  # user stopped marketing messages
EXPERIMENT_ERROR = 130472  # the user is part of Meta's marketing experiment
HOLD, RELEASED = "hold", "end"  # experiment history: a 130472, a delivered marketing message
SLOT_SECONDS = 86400  # a messaging-limit slot is open for Meta's moving 24 hours
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


@quick_init
@dataclass(frozen=True, slots=True)
class RecipientState:
    """What the gate knows of one identity (a phone number or a BSUID) of one tenant.

    links and home describe how identities are linked (processors.core.policy.identity): a phone
    number lists the BSUIDs it is linked to, a BSUID names the number it is linked to.
    """

    inbound: tuple[float, ...] = ()  # inbound user messages (open the service window)
    preferences: tuple[tuple[float, str], ...] = ()  # (time, "stop" | "resume")
    limit_hits: tuple[float, ...] = ()  # delivery statuses with 131049
    # (time, message_id, outcome) recently decided; outcome: "" accepted, else the error code
    decided: tuple[tuple[float, str, str], ...] = ()
    # Pair rate (GCRA): (business number or "", theoretical arrival time, last send time).
    pair: tuple[tuple[str, float, float], ...] = ()
    links: tuple[tuple[str, str, float], ...] = ()  # (kind, identity, linked at): a number's
    home: tuple[str, float] | None = None  # (number, linked at): a BSUID's
    # Start of the user's messaging-limit slot, on its head identity's record, when the
    # tenant stage opened it in the same transaction (processors.runtime.gate.processor): a send
    # to a counted user then needs no trip to the stage.
    slot: float | None = None
    # Meta's marketing experiment (130472): (time, "hold" | "end"), time-sorted; the latest at
    # or before the clock says whether marketing to the user is held back.
    experiment: tuple[tuple[float, str], ...] = ()

    def is_empty(self) -> bool:
        return not (self.inbound or self.preferences or self.limit_hits or self.decided
                    or self.pair or self.links or self.home or self.slot is not None
                    or self.experiment)

    def history(self) -> RecipientState:
        """The state without its links: what moves with an identity."""
        return replace(self, links=(), home=None)


EMPTY = RecipientState()


T = TypeVar("T", float, tuple[float, str])


def _insert(history: tuple[T, ...], item: T) -> tuple[T, ...]:
    items = list(history)
    if item in items:
        return history
    bisect.insort(items, item)
    return tuple(items[-MAX_HISTORY:])


def with_inbound(state: RecipientState, at: float) -> RecipientState:
    return replace(state, inbound=_insert(state.inbound, at))


def with_preference(state: RecipientState, at: float, preference: str) -> RecipientState:
    return replace(state, preferences=_insert(state.preferences, (at, preference)))


def with_limit_hit(state: RecipientState, at: float) -> RecipientState:
    return replace(state, limit_hits=_insert(state.limit_hits, at))


def with_decided(state: RecipientState, message_id: str, at: float, outcome: str = "",
                 keep: int = MAX_DECIDED) -> RecipientState:
    """Remember a decided message_id (the idempotency key) and its outcome ("" accepted, else
    the error code: what the recipient endpoint shows), the newest `keep` of them."""
    # Built directly: dataclasses.replace() costs more than the rest of this, per decision.
    return RecipientState(state.inbound, state.preferences, state.limit_hits,
                          (*state.decided, (at, message_id, outcome))[-keep:], state.pair,
                          state.links, state.home, state.slot, state.experiment)


def already_decided(state: RecipientState, message_id: str) -> bool:
    return message_id in map(_SECOND, state.decided)  # half the cost of any(<generator>)


def pair_budget(state: RecipientState, business_number: str) -> tuple[float, float] | None:
    """(tat, last send) of the pair, if it has sent lately."""
    for number, tat, last in state.pair:
        if number == business_number:
            return tat, last
    return None


def pair_retry(state: RecipientState, business_number: str, clock: float, burst: int,
               interval: float) -> float | None:
    """None if one more send fits the pair's budget at the clock, else when it will.

    A token bucket of `burst` sends refilled one every `interval` seconds, kept as GCRA's
    theoretical arrival time (tat): a send fits while the time owed (tat - clock) is at most
    (burst - 1) intervals. The bucket's clock never runs backwards: a send dated before the
    last one (an unsorted campaign file) is counted as if sent with it.
    """
    budget = pair_budget(state, business_number)
    if budget is None:
        return None
    tat, last = budget
    allowance = (burst - 1) * interval
    if tat - max(clock, last) <= allowance:
        return None
    return tat - allowance


def with_send(state: RecipientState, business_number: str, clock: float,
              interval: float) -> RecipientState:
    """An accepted send takes one interval of the pair's budget."""
    budget = pair_budget(state, business_number)
    at = clock if budget is None else max(clock, budget[1])
    tat = (at if budget is None else max(budget[0], at)) + interval
    others = [p for p in state.pair if p[0] != business_number]
    return RecipientState(state.inbound, state.preferences, state.limit_hits, state.decided,
                          tuple(sorted([*others, (business_number, tat, at)])), state.links,
                          state.home, state.slot, state.experiment)


def without_send(state: RecipientState, business_number: str,
                 interval: float) -> RecipientState:
    """Give back the interval an accepted send took (with_send) when a later step refused it
    (the tenant's messaging limit): the budget is as if the send had not been made, as
    far as later sends have not moved its clock."""
    budget = pair_budget(state, business_number)
    if budget is None:
        return state
    tat, last = budget
    others = [p for p in state.pair if p[0] != business_number]
    return RecipientState(state.inbound, state.preferences, state.limit_hits, state.decided,
                          tuple(sorted([*others, (business_number, tat - interval, last)])),
                          state.links, state.home, state.slot, state.experiment)


def with_slot(state: RecipientState, start: float) -> RecipientState:
    """The user was counted against the tenant's messaging limit at `start`."""
    return RecipientState(state.inbound, state.preferences, state.limit_hits, state.decided,
                          state.pair, state.links, state.home, start,
                          state.experiment)  # replace() is slower


def slot_open(state: RecipientState, clock: float) -> bool:
    """The user holds a messaging-limit slot open at the clock (with_slot)."""
    return state.slot is not None and state.slot + SLOT_SECONDS > clock


def with_outcome(state: RecipientState, message_id: str, outcome: str) -> RecipientState:
    """The outcome of a decided message, known later (the tenant's messaging limit)."""
    decided = tuple((at, mid, outcome if mid == message_id else was)
                    for at, mid, was in state.decided)
    return replace(state, decided=decided)


def combine(states: list[RecipientState], clock: float) -> RecipientState:
    """One user's state from the states of its linked identities: histories merged; pair
    budgets added up (the time each identity owes past the clock). The links stay out (one
    state is returned as it is: no rule reads its links)."""
    if len(states) == 1:
        return states[0]
    inbound: set[float] = set()
    preferences: set[tuple[float, str]] = set()
    hits: set[float] = set()
    decided: set[tuple[float, str, str]] = set()
    experiment: set[tuple[float, str]] = set()
    budgets: dict[str, list[tuple[float, float]]] = {}
    for state in states:
        inbound.update(state.inbound)
        preferences.update(state.preferences)
        hits.update(state.limit_hits)
        decided.update(state.decided)
        experiment.update(state.experiment)
        for number, tat, last in state.pair:
            budgets.setdefault(number, []).append((tat, last))
    pair = []
    for number, parts in budgets.items():
        last = max(part[1] for part in parts)
        at = max(clock, last)
        pair.append((number, at + sum(max(0.0, tat - at) for tat, _ in parts), last))
    # The newest messaging-limit slot of any identity: a user counted under one identity (an
    # old number, a BSUID alone) holds it under all of them.
    slots = [state.slot for state in states if state.slot is not None]
    return RecipientState(
        tuple(sorted(inbound))[-MAX_HISTORY:], tuple(sorted(preferences))[-MAX_HISTORY:],
        tuple(sorted(hits))[-MAX_HISTORY:], tuple(sorted(decided))[-MAX_DECIDED:],
        tuple(sorted(pair)), slot=max(slots) if slots else None,
        experiment=tuple(sorted(experiment))[-MAX_HISTORY:])


def merge(into: RecipientState, moved: RecipientState, clock: float) -> RecipientState:
    """An identity's history moved into another record of the same identity (re-homing)."""
    combined = combine([into.history(), moved.history()], clock)
    return replace(combined, links=into.links, home=into.home)


def apply_status(state: RecipientState, status: dict[str, Any]) -> RecipientState:
    """A delivery status: 131049 starts a cool-down, 131050 counts as a stop preference,
    130472 holds marketing back (Meta's experiment) until a marketing message is delivered."""
    at = parse_rfc3339(status["timestamp"])
    codes = {error.get("code") for error in status.get("errors") or ()}
    if LIMIT_ERROR in codes:
        state = with_limit_hit(state, at)
    if STOP_ERROR in codes:
        state = with_preference(state, at, "stop")
    if EXPERIMENT_ERROR in codes:
        state = with_experiment(state, at, HOLD)
    elif status.get("category") == "MARKETING" and status["status"] in ("delivered", "read") \
            and state.experiment:
        # Meta delivered marketing to the user again: the experiment no longer holds them.
        state = with_experiment(state, at, RELEASED)
    return state


def with_experiment(state: RecipientState, at: float, mark: str) -> RecipientState:
    return replace(state, experiment=_insert(state.experiment, (at, mark)))


def experiment_hold(state: RecipientState, clock: float) -> float | None:
    """When the 130472 that holds marketing to the user back at the clock came; None when none
    does (never one, or a marketing message delivered since)."""
    latest = None
    for at, mark in state.experiment:
        if at > clock:
            break
        latest = at if mark == HOLD else None
    return latest


def apply_inbound(state: RecipientState, inbound: dict[str, Any]) -> RecipientState:
    # A system message (the user changed number) is Meta's notice, not the user writing to
    # the business: it opens no customer service window; it only links identities.
    if inbound.get("channel") == "system":
        return state
    return with_inbound(state, parse_rfc3339(inbound["timestamp"]))


def apply_preference(state: RecipientState, preference: dict[str, Any]) -> RecipientState:
    return with_preference(state, parse_rfc3339(preference["timestamp"]), preference["preference"])


def last_inbound(state: RecipientState, clock: float) -> float | None:
    """The newest inbound message at or before the clock."""
    index = bisect.bisect_right(state.inbound, clock)
    return state.inbound[index - 1] if index else None


def preference_at(state: RecipientState, clock: float) -> str | None:
    """The recipient's latest marketing preference at the clock; None when never stated."""
    latest = None
    for at, preference in state.preferences:
        if at > clock:
            break
        latest = preference
    return latest


def last_limit_hit(state: RecipientState, clock: float) -> float | None:
    index = bisect.bisect_right(state.limit_hits, clock)
    return state.limit_hits[index - 1] if index else None


# Contract name -> (reducer, field naming the recipient). Used by the offline check and the worker.
REDUCERS = {
    "delivery_status": (apply_status, "recipient"),
    "inbound_message": (apply_inbound, "sender"),
    "user_preference": (apply_preference, "recipient"),
}


def state_key(tenant_id: str, recipient_e164: str) -> str:
    return f"{tenant_id}:{recipient_e164}"


@dataclass(frozen=True, slots=True)
class Retention:
    service_window_seconds: float
    cooldown_seconds: float
    dedup_seconds: float
    experiment_hold_seconds: float = 30 * 86400


def prune(state: RecipientState, now: float, keep: Retention) -> RecipientState:
    """Forget what can no longer change a decision at `now` or later.

    Inbound messages older than the window, 131049 hits older than the cool-down and decided
    message ids older than the de-duplication window expire; of the preferences only the one in
    force now (and any stated for later) matter. A lone "resume" is kept too: state events
    arrive in any order (a 131050 status and a preference travel on different topics), so a
    stop stamped before the resume that arrives after it must not take effect; and once the
    identity is linked to another one, the resume still outranks that identity's older stop.
    """
    # Each history is time-sorted: what expires is a prefix, so checking the oldest entry
    # tells whether anything changes (the common case: nothing does, and no object is made).
    window_start = now - keep.service_window_seconds
    cooldown_start = now - keep.cooldown_seconds
    dedup_start = now - keep.dedup_seconds
    preferences = state.preferences
    if len(preferences) > 1 and preferences[1][0] <= now:
        past = [p for p in preferences if p[0] <= now]
        preferences = (past[-1], *(p for p in preferences if p[0] > now))
    inbound, hits, decided, pair = state.inbound, state.limit_hits, state.decided, state.pair
    if inbound and inbound[0] <= window_start:
        inbound = tuple(t for t in inbound if t > window_start)
    if hits and hits[0] <= cooldown_start:
        hits = tuple(t for t in hits if t > cooldown_start)
    # The oldest times by map(itemgetter): a generator over up to MAX_DECIDED entries was ~4%
    # of the route step. Decided ids are not always in time order (the clock can step back).
    if decided and min(map(_FIRST, decided)) <= dedup_start:
        decided = tuple(d for d in decided if d[0] > dedup_start)
    if pair and min(map(_SECOND, pair)) <= now:
        pair = tuple(p for p in pair if p[1] > now)  # a whole budget needs no record
    slot = state.slot
    if slot is not None and slot + SLOT_SECONDS <= now:
        slot = None
    experiment = state.experiment
    if experiment and experiment[0][0] <= now:
        # Only the entry in force now matters, while a hold could still last: a hold for its
        # own hold time; an "end" as long, since a 130472 stamped before it that arrives late
        # (statuses come in any order) must not take effect.
        past = [e for e in experiment if e[0] <= now]
        future = tuple(e for e in experiment if e[0] > now)
        current = past[-1]
        keep_current = current[0] > now - keep.experiment_hold_seconds
        experiment = ((current,) if keep_current else ()) + future
        if experiment == state.experiment:
            experiment = state.experiment
    # Each branch above that ran dropped something: unchanged means the same objects.
    if (inbound is state.inbound and hits is state.limit_hits and decided is state.decided
            and pair is state.pair and preferences is state.preferences
            and slot is state.slot and experiment is state.experiment):
        return state
    return RecipientState(inbound, preferences, hits, decided, pair, state.links, state.home,
                          slot, experiment)


def to_json(state: RecipientState) -> list[Any]:
    """Compact store value: [inbound, [[time, preference]...], limit_hits,
    [[time, id, outcome]...],
    [[business number, tat]...], [[kind, identity, at]...], [number, at] | null
    (, slot start or null: only when a slot is open or an experiment is known
    (, [[time, "hold" | "end"]...]: only when an experiment is known))]."""
    value = [list(state.inbound), [list(p) for p in state.preferences],
             list(state.limit_hits), [list(d) for d in state.decided],
             [list(p) for p in state.pair], [list(link) for link in state.links],
             list(state.home) if state.home else None]
    if state.experiment:
        return [*value, state.slot, [list(e) for e in state.experiment]]
    return value if state.slot is None else [*value, state.slot]


def to_bytes(state: RecipientState) -> bytes:
    """orjson.dumps(to_json(state)), without copying every tuple into a list first: orjson
    writes a tuple as the array a list makes (half the cost for a state of 32 decided ids)."""
    if state.experiment:
        return orjson.dumps([state.inbound, state.preferences, state.limit_hits, state.decided,
                             state.pair, state.links, state.home or None, state.slot,
                             state.experiment])
    if state.slot is None:
        return orjson.dumps([state.inbound, state.preferences, state.limit_hits,
                             state.decided, state.pair, state.links, state.home or None])
    return orjson.dumps([state.inbound, state.preferences, state.limit_hits, state.decided,
                         state.pair, state.links, state.home or None, state.slot])


def from_json(value: list[Any] | None) -> RecipientState:
    if not value:
        return EMPTY
    inbound, preferences, hits, decided = value[:4]
    # Values written before pair budgets and links have four fields.
    pair, links, home = (value[4:7] if len(value) >= 7 else ([], [], None))
    # List comprehensions: a third cheaper than generators, and a busy recipient's state (32
    # decided ids) is read on every batch that has it.
    return RecipientState(tuple(inbound), tuple([(float(t), str(p)) for t, p in preferences]),
                          tuple(hits),
                          # Entries written before outcomes were kept have two fields: "?".
                          tuple([(float(d[0]), str(d[1]), str(d[2]) if len(d) > 2 else "?")
                                 for d in decided]),
                          tuple([(str(n), float(t), float(last)) for n, t, last in pair]),
                          tuple([(str(k), str(i), float(t)) for k, i, t in links]),
                          (str(home[0]), float(home[1])) if home else None,
                          float(value[7]) if len(value) > 7 and value[7] is not None else None,
                          tuple([(float(t), str(m)) for t, m in value[8]])
                          if len(value) > 8 else ())
