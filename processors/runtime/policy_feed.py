"""Policy updates without restart: every worker follows the compacted policy topic.

Each worker reads the whole topic (no consumer group) from the beginning and switches to each
valid document as it reads it; an invalid one is refused with a log line and the policy in force
stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust
import orjson

from processors.core.policy import PolicyError, PolicySet, parse_policy
from processors.runtime import feed
from processors.runtime.metrics import GateMetrics
from processors.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class PolicyHolder:
    """The policy in force; the only mutable thing the route agent reads besides its tables."""

    current: PolicySet
    metrics: GateMetrics | None = None
    caught_up: bool = False

    def __post_init__(self) -> None:
        if self.metrics:
            self.metrics.policy_in_force(self.current.id, self.current.version)

    def offer(self, raw: bytes | None, where: str) -> bool:
        if raw is None:
            log.warning("policy tombstone at %s ignored: policy %s version %s stays", where,
                        self.current.id, self.current.version, extra={"event": "policy_refused"})
            return False
        try:
            policies = parse_policy(orjson.loads(raw))
        except (orjson.JSONDecodeError, PolicyError) as exc:
            log.error("policy at %s refused (%s): policy %s version %s stays", where, exc,
                      self.current.id, self.current.version, extra={"event": "policy_refused"})
            if self.metrics:
                self.metrics.policy_refused.inc()
            return False
        if (policies.id, policies.version) != (self.current.id, self.current.version):
            log.info("policy in force: %s version %s (from %s)", policies.id, policies.version,
                     where, extra={"event": "policy_change", "policy_id": policies.id,
                                   "policy_version": policies.version})
            if self.metrics:
                self.metrics.policy_changes.inc()
                self.metrics.policy_in_force(policies.id, policies.version)
        self.current = policies
        return True


def register(app: faust.App, settings: Settings, holder: PolicyHolder) -> None:
    @app.task  # type: ignore[untyped-decorator]
    async def follow_policy() -> None:
        def caught_up() -> None:
            holder.caught_up = True

        await feed.follow(
            settings, settings.topics.policy, "policy",
            lambda tp, record: holder.offer(record.value,
                                            f"{tp.topic}:{tp.partition}@{record.offset}"),
            caught_up)
