"""The policy as data: load, validate, and resolve per-tenant overrides. Pure."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from processors.core import contracts
from processors.core.policy.codes import RULE_CODES
from processors.core.timeutil import parse_rfc3339


class PolicyError(ValueError):
    """A policy document that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class RuleSetting:
    mode: str  # enforce | monitor | off
    start: float
    end: float | None

    def active_at(self, clock: float) -> bool:
        return self.mode != "off" and self.start <= clock and (self.end is None or clock < self.end)


EXPERIMENT_HOLD_SECONDS = 30 * 86400  # default of marketing_experiment_hold_seconds


@dataclass(frozen=True, slots=True)
class Parameters:
    paused_regions: frozenset[str]
    unsupported_regions: frozenset[str]
    bulk_origins: frozenset[str]
    marketing_cooldown_seconds: float
    service_window_seconds: float
    pair_rate_burst: int
    pair_rate_interval_seconds: float
    # How long a 130472 (Meta's marketing experiment) holds marketing to the user back: the
    # gate's choice, Meta names no end.
    marketing_experiment_hold_seconds: float = EXPERIMENT_HOLD_SECONDS
    # The tenant's messaging limit pinned by the policy: new users per 24 h, or "unlimited";
    # None: learned from Meta's webhooks (processors.core.policy.messaging_limit).
    messaging_limit: int | str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """One tenant's effective policy: what the rules read."""

    id: str
    version: str
    rules: Mapping[str, RuleSetting]
    parameters: Parameters


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A whole policy document: the base policy and the tenants that override it."""

    id: str
    version: str
    base: Policy
    tenants: Mapping[str, Policy] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict)

    def for_tenant(self, tenant_id: str) -> Policy:
        return self.tenants.get(tenant_id, self.base)


def _rule_settings(rules: Mapping[str, Any]) -> dict[str, RuleSetting]:
    settings = {}
    for code, rule in rules.items():
        until = rule.get("until")
        settings[code] = RuleSetting(
            mode=rule["mode"],
            start=parse_rfc3339(rule["from"]),
            end=parse_rfc3339(until) if until else None,
        )
    return settings


def _parameters(raw: Mapping[str, Any]) -> Parameters:
    paused = set(raw["paused_regions"])
    if raw["pause_us_territories"]:
        paused |= set(raw["us_territories"])
    return Parameters(
        paused_regions=frozenset(paused),
        unsupported_regions=frozenset(raw["unsupported_regions"]),
        bulk_origins=frozenset(raw["bulk_origins"]),
        marketing_cooldown_seconds=float(raw["marketing_cooldown_seconds"]),
        service_window_seconds=float(raw["service_window_seconds"]),
        pair_rate_burst=int(raw["pair_rate_burst"]),
        pair_rate_interval_seconds=float(raw["pair_rate_interval_seconds"]),
        marketing_experiment_hold_seconds=float(raw.get("marketing_experiment_hold_seconds",
                                                        EXPERIMENT_HOLD_SECONDS)),
        messaging_limit=raw.get("messaging_limit"),
    )


def _merge_rules(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for code, partial in override.items():
        merged[code] = {**merged.get(code, {"mode": "enforce", "from": "1970-01-01T00:00:00Z"}),
                        **partial}
    return merged


def parse_policy(document: Any) -> PolicySet:
    """Validate a policy document against schemas/policy.schema.json and resolve it."""
    problem = contracts.first_error("policy", document)
    if problem:
        raise PolicyError(f"invalid policy document: {problem}")
    missing = [code for code in RULE_CODES if code not in document["rules"]]
    if missing:
        raise PolicyError(f"invalid policy document: rules/ lacks {', '.join(missing)}")
    policy_id, version = document["id"], document["version"]
    base = Policy(policy_id, version, _rule_settings(document["rules"]),
                  _parameters(document["parameters"]))
    tenants = {}
    for tenant_id, override in document.get("tenants", {}).items():
        rules = _merge_rules(document["rules"], override.get("rules", {}))
        parameters = {**document["parameters"], **override.get("parameters", {})}
        tenants[tenant_id] = Policy(policy_id, version, _rule_settings(rules),
                                    _parameters(parameters))
    return PolicySet(policy_id, version, base, tenants, document)


def load_policy(path: str | Path | None = None) -> PolicySet:
    """The policy file at path, or the default policy shipped inside the package."""
    if path is None:
        text = resources.files("processors.core.policy").joinpath("default_policy.json").read_text(
            encoding="utf-8"
        )
        where = "default policy"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from exc
        where = str(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{where} is not JSON: {exc}") from exc
    return parse_policy(document)
