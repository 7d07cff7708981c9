"""What the gate knows of one user, in words an agent's tool can show. Pure.

The answer to "why was this blocked?": the service window, the marketing preference, the
per-user marketing cool-down, the pair-rate budget of each business number and the last
decisions, from the user's combined state (every linked identity) at a clock. The recipient
endpoint of the check API (processors.runtime.check_api) serves it.
"""

from __future__ import annotations

import math
from typing import Any

from processors.core.policy import state as st
from processors.core.policy.document import Parameters
from processors.core.timeutil import format_rfc3339

ACCEPTED, UNKNOWN = "accepted", "unknown"


def _time(at: float | None) -> str | None:
    return None if at is None else format_rfc3339(at)


def describe(tenant: str, identity: str, head: str, head_state: st.RecipientState,
             combined: st.RecipientState, parameters: Parameters, clock: float
             ) -> dict[str, Any]:
    """identity: the one asked about; head: its user's head identity (the number a linked
    BSUID follows, else the identity itself); head_state: the head's own record (its links);
    combined: the user's state (processors.runtime.gate.processor.user_state)."""
    inbound = st.last_inbound(combined, clock)
    window_end = None if inbound is None else inbound + parameters.service_window_seconds
    preference, since = None, None
    for at, stated in combined.preferences:
        if at > clock:
            break
        preference, since = stated, at
    held = st.experiment_hold(combined, clock)  # Meta's 130472
    hit = st.last_limit_hit(combined, clock)
    cooldown_end = None if hit is None else hit + parameters.marketing_cooldown_seconds
    return {
        "tenant_id": tenant,
        "identity": identity,
        "user": head,
        "linked": [{"kind": kind, "identity": other, "linked_at": _time(at)}
                   for kind, other, at in head_state.links],
        "as_of": format_rfc3339(clock),
        "service_window": {
            "last_inbound_at": _time(inbound),
            "open_until": _time(window_end) if window_end and window_end > clock else None,
        },
        "marketing": {
            "preference": preference,
            "since": _time(since),
            "opted_out": preference == "stop",
        },
        "cooldown_until": _time(cooldown_end) if cooldown_end and cooldown_end > clock
        else None,
        "marketing_experiment_until": _time(held + parameters.marketing_experiment_hold_seconds)
        if held is not None and held + parameters.marketing_experiment_hold_seconds > clock
        else None,
        "pair_rate": [_pair(number, combined, parameters, clock)
                      for number, _, _ in combined.pair],
        "last_decisions": [
            {"message_id": message_id, "decided_at": format_rfc3339(at),
             "outcome": ACCEPTED if outcome == "" else UNKNOWN if outcome == "?" else outcome}
            for at, message_id, outcome in sorted(combined.decided, reverse=True)],
    }


def _pair(number: str, state: st.RecipientState, parameters: Parameters, clock: float
          ) -> dict[str, Any]:
    """A business number's budget to this user: sends that fit now, and when the next fits."""
    burst, interval = parameters.pair_rate_burst, parameters.pair_rate_interval_seconds
    budget = st.pair_budget(state, number)
    owed = 0.0 if budget is None else max(0.0, budget[0] - max(clock, budget[1]))
    # GCRA: a send fits while the time owed is at most (burst - 1) intervals.
    available = max(0, min(burst, math.floor(((burst - 1) * interval - owed) / interval) + 1))
    retry = st.pair_retry(state, number, clock, burst, interval)
    return {"business_number": number or None, "sends_available": available,
            "next_send_at": _time(retry)}
