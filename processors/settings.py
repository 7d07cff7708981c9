"""Environment -> typed configuration. Every topic name is configurable (DESIGN §3)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from processors.webhooks import WEBHOOK, load_tenant_map


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Topics:
    outbound: str = "outbound.messages"
    accepted: str = "outbound.messages.accepted"
    rejected: str = "outbound.messages.rejected"
    dlq: str = "outbound.messages.dlq"
    templates: str = "whatsapp.templates"
    statuses: str = "whatsapp.statuses"
    inbound: str = "whatsapp.inbound"
    preferences: str = "whatsapp.user-preferences"
    policy: str = "outbound-gate.policy"
    # Meta's webhook bodies of every field on one topic (they are read on the four above too).
    webhooks: str = "whatsapp.webhooks"

    def contracts(self) -> dict[str, str]:
        """Input topic -> the contract its values follow."""
        return {
            self.outbound: "outbound_message",
            self.templates: "template_entry",
            self.statuses: "delivery_status",
            self.inbound: "inbound_message",
            self.preferences: "user_preference",
            self.webhooks: WEBHOOK,
        }

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every Kafka client of the gate connects (processors/kafka_security.py applies it)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in {"SSL", "SASL_SSL"}

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in {"SASL_SSL", "SASL_PLAINTEXT"}

    def describe(self) -> str:
        """For logs: the protocol, the SASL user and whether a client certificate is used."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} user {self.sasl_username!r}")
        if self.ssl_certfile:
            parts.append("client certificate")
        return ", ".join(parts)


TOPIC_ENV = {f.name: f"OUTBOUND_GATE_TOPIC_{f.name.upper()}" for f in fields(Topics)}


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "outbound-gate"
    topics: Topics = field(default_factory=Topics)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    partitions: int = 8
    replication_factor: int = 1
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    policy_file: str | None = None
    data_dir: str = ".local/worker"
    max_message_bytes: int = 1_000_000
    log_level: str = "info"
    store: str = "rocksdb://"
    state_sweep_seconds: int = 600
    dedup_seconds: int = 3600
    session_timeout_seconds: int = 15
    tenant_label_cap: int = 500
    processing_guarantee: str = "exactly_once"
    batch_records: int = 500
    transaction_timeout_seconds: int = 60
    # Meta webhook bodies name no tenant: "waba:<WABA id>" / "phone:<phone_number_id>" -> tenant,
    # used when a record has no tenant_id header.
    tenant_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def repartition_topic(self) -> str:
        """Where records are re-keyed by tenant_id:recipient_e164 (created by the gate)."""
        return f"{self.app_id}-recipient-events"

    @property
    def changelog_topic(self) -> str:
        """The recipient state's changelog (compacted; created by the gate)."""
        return f"{self.app_id}-recipient-state-changelog"


ENV_HELP = {
    "KAFKA_BOOTSTRAP_SERVERS": "broker list, host:port[,host:port] (default 127.0.0.1:9092)",
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT (default), SSL, SASL_SSL or SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512 (default with SASL), SCRAM-SHA-256 or PLAIN",
    "KAFKA_SASL_USERNAME": "SASL user (required with SASL_SSL / SASL_PLAINTEXT)",
    "KAFKA_SASL_PASSWORD": "SASL password",
    "KAFKA_SASL_PASSWORD_FILE": "a file holding the SASL password (a mounted secret, say)",
    "KAFKA_SSL_CAFILE": "PEM CA bundle the broker certificate must chain to (system store)",
    "KAFKA_SSL_CERTFILE": "PEM client certificate, for brokers that require one (mutual TLS)",
    "KAFKA_SSL_KEYFILE": "PEM private key of KAFKA_SSL_CERTFILE (if not in that file)",
    "KAFKA_SSL_KEY_PASSWORD": "password of an encrypted KAFKA_SSL_KEYFILE",
    "KAFKA_SSL_KEY_PASSWORD_FILE": "a file holding KAFKA_SSL_KEY_PASSWORD",
    "KAFKA_SSL_CHECK_HOSTNAME": "check the broker certificate names the host (true)",
    "OUTBOUND_GATE_APP_ID": "Faust app id: consumer group and table topic prefix (outbound-gate)",
    "OUTBOUND_GATE_PARTITIONS": "partitions of topics the gate creates (8): the most workers",
    "OUTBOUND_GATE_REPLICATION_FACTOR": "replication factor of topics the gate creates (1)",
    "OUTBOUND_GATE_WEB_PORT": "HTTP port of the worker (6066)",
    "OUTBOUND_GATE_WEB_HOST": "address the HTTP server binds (127.0.0.1; 0.0.0.0 in containers)",
    "OUTBOUND_GATE_POLICY_FILE": "policy document replacing the packaged default",
    "OUTBOUND_GATE_DATA_DIR": "worker data directory (.local/worker)",
    "OUTBOUND_GATE_MAX_MESSAGE_BYTES": "larger input values go to the dead-letter topic (1000000)",
    "OUTBOUND_GATE_LOG_LEVEL": "debug, info, warning or error (info)",
    "OUTBOUND_GATE_STORE": "recipient-state store: rocksdb:// (persistent) or memory://",
    "OUTBOUND_GATE_STATE_SWEEP_SECONDS": "how often expired recipient state is swept (600)",
    "OUTBOUND_GATE_DEDUP_SECONDS": "a message_id seen again within this is dropped (3600); "
                                   "0 switches de-duplication off",
    "OUTBOUND_GATE_SESSION_TIMEOUT_SECONDS": "a silent worker loses its partitions after (15)",
    "OUTBOUND_GATE_TENANT_LABEL_CAP": "tenants with their own metric label; others fold (500)",
    "OUTBOUND_GATE_PROCESSING_GUARANTEE": "exactly_once (Kafka transactions, default) or "
                                          "at_least_once (a crash can repeat a decision)",
    "OUTBOUND_GATE_BATCH_RECORDS": "most records per fetch and transaction (500)",
    "OUTBOUND_GATE_TRANSACTION_TIMEOUT_SECONDS": "the broker aborts a transaction left open by "
                                                 "a dead worker after this (60)",
    "OUTBOUND_GATE_TENANT_MAP": "JSON file {\"waba:<WABA id>\": tenant, "
                                "\"phone:<phone_number_id>\": tenant}: the tenant of Meta "
                                "webhook bodies without a tenant_id record header",
    **{env: f"topic name ({getattr(Topics(), name)})" for name, env in TOPIC_ENV.items()},
}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}")
    return value


def _tenant_map(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        return load_tenant_map(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"OUTBOUND_GATE_TENANT_MAP={path!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SettingsError(f"OUTBOUND_GATE_TENANT_MAP={path!r}: {exc}") from exc


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """NAME, or the contents of the file NAME_FILE (one trailing newline dropped)."""
    value, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if value is not None and path is not None:
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    if path is None:
        return value
    try:
        with open(path, encoding="utf-8") as source:
            text = source.read()
    except OSError as exc:
        raise SettingsError(f"{name}_FILE={path!r}: {exc.strerror or exc}") from exc
    return text[:-1] if text.endswith("\n") else text


def _file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name) or None
    if path is not None and not os.path.isfile(path):
        raise SettingsError(f"{name}={path!r}: no such file")
    return path


def security_from_env(env: Mapping[str, str]) -> KafkaSecurity:
    protocol = (env.get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol!r}: use "
                            f"{', '.join(SECURITY_PROTOCOLS)}")
    sasl = protocol.startswith("SASL_")
    ssl = protocol in {"SSL", "SASL_SSL"}
    sasl_vars = ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
                 "KAFKA_SASL_PASSWORD_FILE"]
    ssl_vars = ["KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE",
                "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SSL_KEY_PASSWORD_FILE"]
    # A variable that would be ignored is a mistake (say, a forgotten KAFKA_SECURITY_PROTOCOL).
    for name in [*([] if sasl else sasl_vars), *([] if ssl else ssl_vars)]:
        if env.get(name):
            raise SettingsError(f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                                f"use it: use {'SASL_SSL' if name in sasl_vars else 'SSL'}")
    if not (sasl or ssl):
        return KafkaSecurity()
    mechanism = username = password = None
    if sasl:
        mechanism = (env.get("KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512").upper()
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(f"KAFKA_SASL_MECHANISM={mechanism!r}: use "
                                f"{', '.join(SASL_MECHANISMS)}")
        username = env.get("KAFKA_SASL_USERNAME") or None
        if username is None:
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME")
        password = _secret(env, "KAFKA_SASL_PASSWORD")
        if password is None:
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_PASSWORD "
                                f"or KAFKA_SASL_PASSWORD_FILE")
    certfile, keyfile = _file(env, "KAFKA_SSL_CERTFILE"), _file(env, "KAFKA_SSL_KEYFILE")
    if keyfile and not certfile:
        raise SettingsError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE")
    check = (env.get("KAFKA_SSL_CHECK_HOSTNAME") or "true").lower()
    if check not in {"true", "false", "1", "0", "yes", "no"}:
        raise SettingsError(f"KAFKA_SSL_CHECK_HOSTNAME={check!r}: use true or false")
    return KafkaSecurity(
        protocol=protocol, sasl_mechanism=mechanism, sasl_username=username,
        sasl_password=password, ssl_cafile=_file(env, "KAFKA_SSL_CAFILE"),
        ssl_certfile=certfile, ssl_keyfile=keyfile,
        ssl_key_password=_secret(env, "KAFKA_SSL_KEY_PASSWORD") if ssl else None,
        ssl_check_hostname=check in {"true", "1", "yes"})


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    topics = Topics(**{name: env[var] for name, var in TOPIC_ENV.items() if env.get(var)})
    level = env.get("OUTBOUND_GATE_LOG_LEVEL", "info").lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise SettingsError(f"OUTBOUND_GATE_LOG_LEVEL={level!r}: use debug, info, warning or error")
    store = env.get("OUTBOUND_GATE_STORE") or "rocksdb://"
    if store not in {"rocksdb://", "memory://"}:
        raise SettingsError(f"OUTBOUND_GATE_STORE={store!r}: use rocksdb:// or memory://")
    guarantee = (env.get("OUTBOUND_GATE_PROCESSING_GUARANTEE") or "exactly_once").lower()
    if guarantee not in {"exactly_once", "at_least_once"}:
        raise SettingsError(f"OUTBOUND_GATE_PROCESSING_GUARANTEE={guarantee!r}: use "
                            "exactly_once or at_least_once")
    return Settings(
        bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
        app_id=env.get("OUTBOUND_GATE_APP_ID") or "outbound-gate",
        topics=topics,
        security=security_from_env(env),
        partitions=_int(env, "OUTBOUND_GATE_PARTITIONS", 8),
        replication_factor=_int(env, "OUTBOUND_GATE_REPLICATION_FACTOR", 1),
        web_port=_int(env, "OUTBOUND_GATE_WEB_PORT", 6066),
        web_host=env.get("OUTBOUND_GATE_WEB_HOST") or "127.0.0.1",
        policy_file=env.get("OUTBOUND_GATE_POLICY_FILE") or None,
        data_dir=env.get("OUTBOUND_GATE_DATA_DIR") or ".local/worker",
        max_message_bytes=_int(env, "OUTBOUND_GATE_MAX_MESSAGE_BYTES", 1_000_000),
        log_level=level,
        store=store,
        state_sweep_seconds=_int(env, "OUTBOUND_GATE_STATE_SWEEP_SECONDS", 600),
        dedup_seconds=_int(env, "OUTBOUND_GATE_DEDUP_SECONDS", 3600, minimum=0),
        session_timeout_seconds=_int(env, "OUTBOUND_GATE_SESSION_TIMEOUT_SECONDS", 15, minimum=6),
        tenant_label_cap=_int(env, "OUTBOUND_GATE_TENANT_LABEL_CAP", 500),
        processing_guarantee=guarantee,
        batch_records=_int(env, "OUTBOUND_GATE_BATCH_RECORDS", 500),
        transaction_timeout_seconds=_int(env, "OUTBOUND_GATE_TRANSACTION_TIMEOUT_SECONDS", 60,
                                         minimum=5),
        tenant_map=_tenant_map(env.get("OUTBOUND_GATE_TENANT_MAP")),
    )
