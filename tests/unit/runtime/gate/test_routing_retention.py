"""GateProcessor.retention(): what a tenant's state keeps, remembered per policy, with no broker."""

from __future__ import annotations

import copy

from processors.core.policy import load_policy, parse_policy
from processors.runtime.gate import recipient_state
from tests.unit.runtime.fakes import make_router


def test_retention_is_the_tenants_and_follows_the_policy_in_force() -> None:
    router = make_router(2)
    dedup = router.settings.dedup_seconds
    document = copy.deepcopy(dict(load_policy().document))
    document["tenants"] = {"slow": {"parameters": {"service_window_seconds": 60}}}
    for policies in (load_policy(), parse_policy(document)):
        router.holder.current = policies
        for tenant in ("acme", "slow", "acme", "slow", "other"):
            assert router.retention(tenant) == recipient_state.retention(policies, tenant,
                                                                         dedup)
    assert router.retention("slow").service_window_seconds == 60
    assert router.retention("acme") is router.retention("other")  # both the base policy's
    router.holder.current = load_policy()  # a new policy set: made anew
    assert router.retention("slow") == recipient_state.retention(router.holder.current, "slow",
                                                                 dedup)
