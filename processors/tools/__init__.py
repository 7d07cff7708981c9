"""Tools around the gate: the producer helper for upstream services, the notifier, the
offline check, the load generator, the pre-flight report, the demo sample."""
