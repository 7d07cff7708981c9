# outbound-gate: the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA := deploy/local/kafka.sh
export PYTHON := $(abspath $(BIN)/python)

.PHONY: install deps crd-schemas run test lint typecheck unit e2e kafka-up kafka-down bench \
	bench-check bench-restore fuzz chaos clean

install: $(VENV)/.installed

# The client first: the server depends on outbound-gate-client, which is in this repository.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

kafka-up: install
	@$(KAFKA) up

kafka-down:
	@$(KAFKA) down

# Starts the local Kafka unless KAFKA_BOOTSTRAP_SERVERS is set, then a worker and a sample.
run: install
	@deploy/local/install-deps.sh run
	@export KAFKA_BOOTSTRAP_SERVERS=$$($(KAFKA) up) && $(BIN)/outbound-gate demo

lint: install
	$(BIN)/ruff check processors tests clients

typecheck: install
	$(BIN)/mypy

unit: install crd-schemas
	$(BIN)/pytest -q tests/unit

# The schemas of the custom resources in deploy/k8s (KEDA's and the Prometheus Operator's CRDs,
# from their Go modules at pinned versions; needs go) for the manifest tests: fetched once into
# .local/crd-schemas/, then a no-op until the pins change.
crd-schemas: install
	@$(BIN)/python deploy/k8s/crd_schemas.py

# Java, Maven, Prometheus (promtool), Chromium, openssl: installed with apt-get when missing
# (silent when nothing is); without root it says the one command to run.
deps:
	@deploy/local/install-deps.sh

# The e2e tests start the local Kafka themselves (or use KAFKA_BOOTSTRAP_SERVERS).
test: deps crd-schemas lint typecheck
	$(BIN)/pytest -q tests

# The gate against a confluent-kafka ceiling, a plain Faust agent and a Quix Streams app on the
# same broker and data; QUICK=1 for a small smoke run. Writes tests/benchmarks/results/.
bench: install
	@export KAFKA_BOOTSTRAP_SERVERS=$$($(KAFKA) up) && \
	  $(BIN)/python -m tests.benchmarks.throughput $(if $(QUICK),--quick,--events $(or $(N),1000000))

# The check API under load: one worker, POST /v1/check at 500/s from concurrent keep-alive
# clients while the stream runs at half its maximum, side by side with the stream alone.
# QUICK=1 for a smoke run; ARGS= for more (e.g. ARGS="--checks-per-second 200"). Writes
# tests/benchmarks/results/check_api.json. Not part of `make test`.
bench-check: install
	@export KAFKA_BOOTSTRAP_SERVERS=$$($(KAFKA) up) && \
	  $(BIN)/python -m tests.benchmarks.check_api $(if $(QUICK),--quick) $(ARGS)

# Cold and warm restore of 1,000,000 recipients' state (a fresh app id; the changelog written
# as the route loop writes it), seconds to /readyz 200, then the peak RSS of the worker and its
# query server draining a backlog and under 500 checks/s. QUICK=1 for a smoke run; ARGS= for
# more (e.g. ARGS="--no-memory"). Writes tests/benchmarks/results/restore.json.
bench-restore: install
	@export KAFKA_BOOTSTRAP_SERVERS=$$($(KAFKA) up) && \
	  $(BIN)/python -m tests.benchmarks.restore $(if $(QUICK),--quick) $(ARGS)

# Hostile input through the real worker: N bad events (100,000 by default) of every kind, with
# good ones between them; every input must get exactly one output of the expected class.
# 200,000 events through worker SIGKILLs, a stop/start and broker restarts (SIGTERM, a minute
# down, and SIGKILL), then a read_committed audit; exits 1 unless lost=duplicated=wrong=0.
# SCALE=1: the group grows from 2 workers to 4 and shrinks back instead (no broker faults).
chaos: install
	@$(KAFKA) up >/dev/null && \
	  $(BIN)/python -m tests.benchmarks.chaos $(if $(SHORT),--short,--events $(or $(N),200000)) \
	    $(if $(SCALE),--scale)

fuzz: install
	@export KAFKA_BOOTSTRAP_SERVERS=$$($(KAFKA) up) && \
	  $(BIN)/python -m tests.benchmarks.hostile --events $(or $(N),100000)

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
