"""processors.settings: one declaration per setting, from_env and ENV_HELP generated from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from processors.settings import (
    ENV_HELP,
    TOPIC_ENV,
    KafkaSecurity,
    Setting,
    Settings,
    SettingsError,
    Topics,
    declared,
    from_env,
    security_from_env,
    show_default,
)

GATE = declared(Settings)
SECURITY = declared(KafkaSecurity)
ALL = [*GATE.values(), *SECURITY.values()]
INTEGERS = [spec for spec in ALL if spec.minimum is not None]

# The variables the gate reads, in the --help order: none may disappear or be renamed unnoticed
# (issue 32 removed the five real-time priority and CPU-slice settings and
# OUTBOUND_GATE_SWITCH_INTERVAL_US on purpose).
VARIABLES = [
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE", "KAFKA_SSL_KEY_PASSWORD",
    "KAFKA_SSL_KEY_PASSWORD_FILE", "KAFKA_SSL_CHECK_HOSTNAME", "OUTBOUND_GATE_APP_ID",
    "OUTBOUND_GATE_PARTITIONS", "OUTBOUND_GATE_REPLICATION_FACTOR", "OUTBOUND_GATE_WEB_PORT",
    "OUTBOUND_GATE_WEB_HOST", "OUTBOUND_GATE_ADVERTISED_URL", "OUTBOUND_GATE_WORKER_PORT",
    "OUTBOUND_GATE_INSTANCE_ID", "OUTBOUND_GATE_QUERY_SERVER", "OUTBOUND_GATE_API_TOKEN",
    "OUTBOUND_GATE_API_TOKEN_FILE", "OUTBOUND_GATE_POLICY_FILE", "OUTBOUND_GATE_DATA_DIR",
    "OUTBOUND_GATE_MAX_MESSAGE_BYTES", "OUTBOUND_GATE_LOG_LEVEL", "OUTBOUND_GATE_STORE",
    "OUTBOUND_GATE_STATE_SWEEP_SECONDS", "OUTBOUND_GATE_DEDUP_SECONDS",
    "OUTBOUND_GATE_SESSION_TIMEOUT_SECONDS", "OUTBOUND_GATE_TENANT_LABEL_CAP",
    "OUTBOUND_GATE_PROCESSING_GUARANTEE", "OUTBOUND_GATE_BATCH_RECORDS",
    "OUTBOUND_GATE_FETCH_WAIT_MS", "OUTBOUND_GATE_TRANSACTION_TIMEOUT_SECONDS",
    "OUTBOUND_GATE_GC_FREEZE", "OUTBOUND_GATE_TENANT_MAP",
    "OUTBOUND_GATE_TOPIC_OUTBOUND", "OUTBOUND_GATE_TOPIC_ACCEPTED", "OUTBOUND_GATE_TOPIC_REJECTED",
    "OUTBOUND_GATE_TOPIC_DLQ", "OUTBOUND_GATE_TOPIC_TEMPLATES", "OUTBOUND_GATE_TOPIC_STATUSES",
    "OUTBOUND_GATE_TOPIC_INBOUND", "OUTBOUND_GATE_TOPIC_PREFERENCES", "OUTBOUND_GATE_TOPIC_POLICY",
    "OUTBOUND_GATE_TOPIC_WEBHOOKS", "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_DLQ",
    "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_SETTLED",
]

# The defaults as they were written before (behaviour must not change).
DEFAULTS = {
    "bootstrap_servers": "127.0.0.1:9092", "app_id": "outbound-gate", "partitions": 8,
    "replication_factor": 1, "web_port": 6066, "web_host": "127.0.0.1", "policy_file": None,
    "advertised_url": None, "worker_port": 0, "instance_id": None, "query_server": True,
    "api_token": None,
    "data_dir": ".local/worker", "max_message_bytes": 1_000_000, "log_level": "info",
    "store": "rocksdb://", "state_sweep_seconds": 600, "dedup_seconds": 3600,
    "session_timeout_seconds": 15, "tenant_label_cap": 500,
    "processing_guarantee": "exactly_once", "batch_records": 500,
    "fetch_wait_ms": 10,
    "transaction_timeout_seconds": 10, "gc_freeze": True, "tenant_map": {},
}
MINIMUMS = {
    "OUTBOUND_GATE_PARTITIONS": 1, "OUTBOUND_GATE_REPLICATION_FACTOR": 1,
    "OUTBOUND_GATE_WEB_PORT": 1, "OUTBOUND_GATE_WORKER_PORT": 0,
    "OUTBOUND_GATE_MAX_MESSAGE_BYTES": 1,
    "OUTBOUND_GATE_STATE_SWEEP_SECONDS": 1, "OUTBOUND_GATE_DEDUP_SECONDS": 0,
    "OUTBOUND_GATE_SESSION_TIMEOUT_SECONDS": 6, "OUTBOUND_GATE_TENANT_LABEL_CAP": 1,
    "OUTBOUND_GATE_BATCH_RECORDS": 1, "OUTBOUND_GATE_FETCH_WAIT_MS": 0,
    "OUTBOUND_GATE_TRANSACTION_TIMEOUT_SECONDS": 5,
}


def test_env_help_lists_exactly_the_variables_the_gate_reads() -> None:
    assert list(ENV_HELP) == VARIABLES
    declared_variables = {name for spec in ALL for name in spec.variables}
    assert declared_variables | set(TOPIC_ENV.values()) == set(ENV_HELP)


@pytest.mark.parametrize("spec", ALL, ids=lambda spec: spec.env)
def test_every_variable_is_in_env_help_with_its_default(spec: Setting) -> None:
    for name in spec.variables:
        assert ENV_HELP[name].strip(), name
    if spec.default is not None and spec.default != {}:
        assert f"default {show_default(spec.default)}" in ENV_HELP[spec.env]
    if spec.minimum is not None:
        assert f"at least {spec.minimum}" in ENV_HELP[spec.env]
    for choice in spec.choices:
        assert choice in ENV_HELP[spec.env]


def test_topic_variables_are_in_env_help_with_their_default() -> None:
    for name, variable in TOPIC_ENV.items():
        assert variable == f"OUTBOUND_GATE_TOPIC_{name.upper()}"
        assert f"default {getattr(Topics(), name)}" in ENV_HELP[variable]


def test_defaults_are_settings_defaults() -> None:
    assert from_env({}) == Settings()
    assert security_from_env({}) == KafkaSecurity()
    defaults = Settings()
    assert {name: getattr(defaults, name) for name in DEFAULTS} == DEFAULTS
    assert set(GATE) == set(DEFAULTS)
    for name, spec in GATE.items():  # the declared default is the field's default
        assert getattr(defaults, name) == spec.default, name
    # A field only some protocols use is None under PLAINTEXT; the rest keep their default.
    for name, spec in SECURITY.items():
        expected = None if spec.protocols else spec.default
        assert getattr(KafkaSecurity(), name) == expected, name


def test_empty_variables_mean_the_default() -> None:
    env = {spec.env: "" for spec in GATE.values()} | {v: "" for v in TOPIC_ENV.values()}
    assert from_env(env) == Settings()


def test_every_variable_is_read() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093", "OUTBOUND_GATE_APP_ID": "gate-2",
        "OUTBOUND_GATE_PARTITIONS": "3", "OUTBOUND_GATE_REPLICATION_FACTOR": "2",
        "OUTBOUND_GATE_WEB_PORT": "7000", "OUTBOUND_GATE_WEB_HOST": "0.0.0.0",
        "OUTBOUND_GATE_POLICY_FILE": "/etc/policy.json", "OUTBOUND_GATE_DATA_DIR": "/data",
        "OUTBOUND_GATE_MAX_MESSAGE_BYTES": "2048", "OUTBOUND_GATE_LOG_LEVEL": "DEBUG",
        "OUTBOUND_GATE_STORE": "memory://", "OUTBOUND_GATE_STATE_SWEEP_SECONDS": "60",
        "OUTBOUND_GATE_DEDUP_SECONDS": "0", "OUTBOUND_GATE_SESSION_TIMEOUT_SECONDS": "6",
        "OUTBOUND_GATE_TENANT_LABEL_CAP": "10", "OUTBOUND_GATE_PROCESSING_GUARANTEE":
        "At_Least_Once", "OUTBOUND_GATE_BATCH_RECORDS": "50",
        "OUTBOUND_GATE_TRANSACTION_TIMEOUT_SECONDS": "5", "OUTBOUND_GATE_TOPIC_DLQ": "dead",
    }
    settings = from_env(env)
    assert settings == dataclasses.replace(
        Settings(), bootstrap_servers="b1:9093,b2:9093", app_id="gate-2", partitions=3,
        replication_factor=2, web_port=7000, web_host="0.0.0.0", policy_file="/etc/policy.json",
        data_dir="/data", max_message_bytes=2048, log_level="debug", store="memory://",
        state_sweep_seconds=60, dedup_seconds=0, session_timeout_seconds=6,
        tenant_label_cap=10, processing_guarantee="at_least_once", batch_records=50,
        transaction_timeout_seconds=5, topics=Topics(dlq="dead"))


@pytest.mark.parametrize("spec", INTEGERS, ids=lambda spec: spec.env)
def test_a_bad_integer_names_the_variable(spec: Setting) -> None:
    read = from_env if spec in GATE.values() else security_from_env
    with pytest.raises(SettingsError, match=f"^{spec.env}='eight' is not an integer$"):
        read({spec.env: "eight"})


@pytest.mark.parametrize("spec", INTEGERS, ids=lambda spec: spec.env)
def test_a_value_below_the_minimum_names_the_variable(spec: Setting) -> None:
    assert spec.minimum == MINIMUMS[spec.env]
    low = spec.minimum - 1
    with pytest.raises(SettingsError, match=f"^{spec.env}={low} is below {spec.minimum}$"):
        from_env({spec.env: str(low)})
    assert getattr(from_env({spec.env: str(spec.minimum)}),
                   next(n for n, s in GATE.items() if s is spec)) == spec.minimum


def test_integer_settings_are_exactly_these() -> None:
    assert {spec.env for spec in INTEGERS} == set(MINIMUMS)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("OUTBOUND_GATE_LOG_LEVEL", "verbose",
     "OUTBOUND_GATE_LOG_LEVEL='verbose': use debug, info, warning or error"),
    ("OUTBOUND_GATE_STORE", "ROCKSDB://",  # not folded: the value is a URL scheme
     "OUTBOUND_GATE_STORE='ROCKSDB://': use rocksdb:// or memory://"),
    ("OUTBOUND_GATE_PROCESSING_GUARANTEE", "Twice",
     "OUTBOUND_GATE_PROCESSING_GUARANTEE='twice': use exactly_once or at_least_once"),
    ("KAFKA_SECURITY_PROTOCOL", "tls",
     "KAFKA_SECURITY_PROTOCOL='TLS': use PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT"),
])
def test_a_value_not_allowed_names_the_variable_and_the_choices(
        variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        from_env({variable: value})
    assert str(raised.value) == message


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("YES", True), ("1", True), ("false", False), ("No", False), ("0", False),
])
def test_check_hostname_reads_a_boolean(value: str, expected: bool) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": value}
    assert security_from_env(env).ssl_check_hostname is expected


def test_a_plaintext_connection_reads_no_other_security_variable() -> None:
    # Not used, so not checked (as before): only the variables some protocol uses are refused.
    assert security_from_env({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}) == KafkaSecurity()
    for spec in SECURITY.values():
        for name in spec.variables if spec.protocols else ():
            with pytest.raises(SettingsError, match=f"^{name} is set but KAFKA_SECURITY_PROTOCOL"
                                                    f"=PLAINTEXT does not use it: use "
                                                    f"{spec.protocols[0]}$"):
                security_from_env({name: "x"})


def test_secrets_come_from_the_variable_or_its_file(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not read here\n")
    password = tmp_path / "key-password"
    password.write_text("p4ss\n\n")
    base = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(key)}
    from_file = security_from_env(base | {"KAFKA_SSL_KEY_PASSWORD_FILE": str(password)})
    assert from_file.ssl_key_password == "p4ss\n"  # one trailing newline dropped
    assert security_from_env(base | {"KAFKA_SSL_KEY_PASSWORD": "x"}).ssl_key_password == "x"
    assert "p4ss" not in repr(from_file)
    with pytest.raises(SettingsError) as raised:
        security_from_env(base | {"KAFKA_SSL_KEY_PASSWORD": "x",
                                  "KAFKA_SSL_KEY_PASSWORD_FILE": str(password)})
    assert str(raised.value) == ("set KAFKA_SSL_KEY_PASSWORD or KAFKA_SSL_KEY_PASSWORD_FILE, "
                                 "not both")
    missing = str(tmp_path / "missing")
    with pytest.raises(SettingsError) as raised:
        security_from_env(base | {"KAFKA_SSL_KEY_PASSWORD_FILE": missing})
    assert str(raised.value) == (f"KAFKA_SSL_KEY_PASSWORD_FILE={missing!r}: "
                                 "No such file or directory")


def test_cross_variable_checks() -> None:
    sasl = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    with pytest.raises(SettingsError) as raised:
        security_from_env(sasl | {"KAFKA_SASL_USERNAME": "gate"})
    assert str(raised.value) == ("KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs "
                                 "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE")
    security = security_from_env(sasl | {"KAFKA_SASL_USERNAME": "gate",
                                         "KAFKA_SASL_PASSWORD": "pw"})
    assert (security.sasl_mechanism, security.ssl_cafile) == ("SCRAM-SHA-512", None)
    with pytest.raises(SettingsError) as raised:
        security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": __file__})
    assert str(raised.value) == "KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE"


def test_an_integer_declaration_needs_a_minimum() -> None:
    from processors.settings import setting

    with pytest.raises(TypeError, match="X_COUNT"):
        setting("X_COUNT", 3, "a count")
