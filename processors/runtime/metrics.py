"""Prometheus metrics of the gate (prometheus_client), beside Faust's own sensor.

Tenant labels are capped: the first `cap` tenants seen keep their label, later ones fold into
"__other__" and a counter says how many were folded. No label ever carries a phone number:
countries are ISO regions, never numbers.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

OTHER_TENANTS = "__other__"
NONE = "none"  # label value for "not applicable" (no category, no error code)

# Seconds; from sub-millisecond decisions to events stuck for minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)


class TenantLabels:
    """Caps the number of distinct tenant label values."""

    def __init__(self, cap: int, folded: Counter) -> None:
        self.cap = cap
        self.kept: set[str] = set()
        self.folded: set[str] = set()
        self._folded_counter = folded
        self._lock = threading.Lock()

    def __call__(self, tenant_id: str) -> str:
        if tenant_id in self.kept:
            return tenant_id
        with self._lock:
            if tenant_id in self.kept:
                return tenant_id
            if len(self.kept) < self.cap:
                self.kept.add(tenant_id)
                return tenant_id
            if tenant_id not in self.folded:
                self.folded.add(tenant_id)
                self._folded_counter.inc()
        return OTHER_TENANTS


class GateMetrics:
    def __init__(self, registry: CollectorRegistry, tenant_cap: int) -> None:
        self.registry = registry
        self.decisions = Counter(
            "outbound_gate_decisions", "Decisions by tenant, outcome, category and error code.",
            ["tenant", "outcome", "category", "error_code"], registry=registry)
        self.monitored = Counter(
            "outbound_gate_monitored_violations",
            "Rules in monitor mode that fired: messages they would have rejected.",
            ["tenant", "rule"], registry=registry)
        self.by_country = Counter(
            "outbound_gate_decisions_by_country", "Decisions by recipient country (no tenant).",
            ["country", "outcome", "error_code"], registry=registry)
        self.decision_latency = Histogram(
            "outbound_gate_decision_latency_seconds",
            "Record consumed to decision produced.", buckets=LATENCY_BUCKETS, registry=registry)
        self.event_age = Histogram(
            "outbound_gate_event_age_seconds", "Message created_at to decision.",
            buckets=AGE_BUCKETS, registry=registry)
        self.messaging_slots = Gauge(
            "outbound_gate_messaging_slots_in_use",
            "Users the tenant reached outside the service window in the last 24 hours (Meta's "
            "messaging limit counts them), on the worker that holds the tenant's count.",
            ["tenant"], registry=registry)
        self.messaging_limit = Gauge(
            "outbound_gate_messaging_limit",
            "The tenant's messaging limit in force (policy or Meta's webhooks).",
            ["tenant"], registry=registry)
        self.dead_letters = Counter(
            "outbound_gate_dead_letters", "Records sent to the dead-letter topic.",
            ["topic", "reason"], registry=registry)
        self.input_records = Counter(
            "outbound_gate_input_records", "Records read from each input topic.",
            ["topic"], registry=registry)
        self.state_events = Counter(
            "outbound_gate_state_events", "State events applied, by contract.",
            ["kind"], registry=registry)
        self.webhook_ignored = Counter(
            "outbound_gate_webhook_events_ignored",
            "Events of Meta webhook bodies read on a topic whose agent does not apply them "
            "(catalog changes on a state topic, state events on the catalog topic).",
            ["topic", "kind"], registry=registry)
        self.sends_before_recategorization = Counter(
            "outbound_gate_sends_before_recategorization",
            "Template sends decided while Meta has announced a category change for that "
            "template that is not in effect yet.",
            ["tenant", "category_from", "category_to"], registry=registry)
        self.repartitioned = Counter(
            "outbound_gate_repartitioned_records",
            "Records re-keyed through the repartition topic.", registry=registry)
        self.transactions = Counter(
            "outbound_gate_transactions",
            "Batches of the route processor by outcome (committed, aborted: read again).",
            ["outcome"], registry=registry)
        self.batch_records = Histogram(
            "outbound_gate_batch_records", "Input records per committed batch and partition.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=registry)
        # Where a batch's time goes, hence the decision latency: the Python work, the broker's
        # acknowledgements (librdkafka sends one request per partition), the commit, the store.
        self.batch_phase = Histogram(
            "outbound_gate_batch_phase_seconds",
            "Wall time of each phase of a committed route batch: process (decide, hand the "
            "outputs to the producer), produce (wait for their acknowledgements), commit "
            "(offsets and transaction commit), store (write the state to the local store).",
            ["phase"], buckets=LATENCY_BUCKETS, registry=registry)
        self.rebalances = Counter(
            "outbound_gate_route_rebalances",
            "Partition revocations seen by the route processor.", registry=registry)
        self.input_lag = Gauge(
            "outbound_gate_input_lag",
            "Records not yet processed per input topic partition, as of the last fetch.",
            ["topic", "partition"], registry=registry)
        self.duplicates = Counter(
            "outbound_gate_duplicate_messages",
            "Outbound messages dropped because their message_id was already decided.",
            registry=registry)
        self.catalog_entries = Gauge(
            "outbound_gate_catalog_entries", "Template catalog entries held.", registry=registry)
        self.state_entries = Gauge(
            "outbound_gate_recipient_state_entries",
            "Recipient-state keys per partition, as counted by the last sweep.",
            ["partition"], registry=registry)
        self.policy_info = Gauge(
            "outbound_gate_policy_info", "The policy in force (value 1).",
            ["policy_id", "version"], registry=registry)
        self.policy_changes = Counter(
            "outbound_gate_policy_changes", "Policy documents taken into force.",
            registry=registry)
        self.policy_refused = Counter(
            "outbound_gate_policy_refused", "Policy documents refused as invalid.",
            registry=registry)
        self.query_server_restarts = Counter(
            "outbound_gate_query_server_restarts",
            "Times the query server (the check API's process) died and was started again.",
            registry=registry)
        self.tenants_folded = Counter(
            "outbound_gate_tenants_folded",
            f"Tenants past the label cap, counted under tenant={OTHER_TENANTS}.",
            registry=registry)
        self.tenant = TenantLabels(tenant_cap, self.tenants_folded)

        self._children: dict[tuple[str, ...], Any] = {}

    def slots(self, tenant_id: str, used: int, limit: int) -> None:
        """A tenant's slots in use and limit (tenants past the label cap are not shown: a
        sum of several tenants' slots and limits says nothing)."""
        tenant = self.tenant(tenant_id)
        if tenant != OTHER_TENANTS:
            self.messaging_slots.labels(tenant).set(used)
            self.messaging_limit.labels(tenant).set(limit)

    def forget_slots(self, tenant_id: str) -> None:
        tenant = self.tenant(tenant_id)
        for gauge in (self.messaging_slots, self.messaging_limit):
            with contextlib.suppress(KeyError):  # never set here
                gauge.remove(tenant)

    def count_decision(self, tenant_id: str, outcome: str, category: str, error_code: str,
                       country: str, monitored: tuple[str, ...], amount: int = 1) -> None:
        """Count one decision; label children are cached (labels() is costly per event)."""
        key = (tenant_id, outcome, category, error_code, country)
        children = self._children.get(key)
        if children is None:
            tenant = self.tenant(tenant_id)
            children = self._children[key] = (
                self.decisions.labels(tenant, outcome, category, error_code),
                self.by_country.labels(country, outcome, error_code))
        children[0].inc(amount)
        children[1].inc(amount)
        for rule in monitored:
            self.monitored.labels(self.tenant(tenant_id), rule).inc(amount)

    def policy_in_force(self, policy_id: str, version: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(policy_id, version).set(1)


class ApiMetrics:
    """The check API's metrics, on the registry of the process that answers checks: the
    worker's own, or the query server's (processors.runtime.query_server), whose /metrics
    serves the worker's families and these together, each once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "outbound_gate_api_requests", "Check API requests by endpoint and HTTP status.",
            ["endpoint", "status"], registry=registry)
        self.latency = Histogram(
            "outbound_gate_api_request_seconds", "Check API request to response, by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)


class BatchedHistogram:
    """One batch's observations of a histogram, added to it at once (flush).

    Histogram.observe() per decision (a Python loop over the buckets, two locked increments)
    cost about as much as the rest of the metrics work of a record; here an observation is a
    bisect and two additions, and flush() one increment per bucket used. The histogram says
    the same: each observation lands in the bucket observe() puts it in (the first whose
    bound it does not exceed), and the sum is theirs (added up in another order: it may
    differ in the last bits). Uses prometheus_client's Histogram internals (_upper_bounds,
    _buckets, _sum), as of 0.26.0 (pinned); tests/unit/runtime/test_metrics.py checks them.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.bounds: list[float] = list(histogram._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.pending = 0

    def observe(self, amount: float) -> None:
        self.total += amount
        self.pending += 1
        if amount == amount:  # NaN: in no bucket, as with observe()
            # the first bound >= amount; the last bound is +Inf
            self.counts[bisect.bisect_left(self.bounds, amount)] += 1

    def flush(self) -> None:
        """Add the batch's observations to the histogram."""
        if not self.pending:
            return
        histogram = self.histogram
        for index, count in enumerate(self.counts):
            if count:
                histogram._buckets[index].inc(count)
                self.counts[index] = 0
        histogram._sum.inc(self.total)
        self.total = 0.0
        self.pending = 0


class MillisecondsAsSeconds(Collector):
    """Re-expose a histogram observed in milliseconds under a *_seconds name, in seconds.

    Faust's sensor names one histogram `<prefix>_events_runtime_ms`, which breaks Prometheus'
    naming rules (promtool: abbreviated unit). This view converts it instead of rewriting the
    sensor.
    """

    def __init__(self, source: Histogram, name: str, documentation: str) -> None:
        self.source = source
        self.name = name
        self.documentation = documentation

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            metric = Metric(self.name, self.documentation, "histogram")
            for sample in family.samples:
                suffix = sample.name[len(family.name):]
                labels = dict(sample.labels)
                if labels.get("le", "+Inf") != "+Inf":
                    labels["le"] = floatToGoString(float(labels["le"]) / 1000)  # type: ignore[no-untyped-call]
                value = sample.value / 1000 if suffix == "_sum" else sample.value
                metric.add_sample(self.name + suffix, labels, value)
            yield metric


def adopt_faust_sensor(registry: CollectorRegistry, monitor: Any) -> None:
    """Swap the one badly named Faust histogram for its seconds view on our registry."""
    runtime = monitor._metrics.events_runtime_latency
    registry.unregister(runtime)
    registry.register(MillisecondsAsSeconds(
        runtime, "faust_events_runtime_seconds", "Events runtime in seconds"))
