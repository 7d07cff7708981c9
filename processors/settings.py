"""Environment -> typed configuration. Every topic name is configurable (DESIGN §3).

Each setting is declared once: a dataclass field whose metadata, built by `setting()`, holds its
environment variable, the value used when the variable is unset, how it is checked (a minimum,
the allowed values, a parser) and its help text. `from_env`, `security_from_env` and `ENV_HELP`
(the worker's `--help`) are generated from those declarations. Topic names are the defaults of
`Topics`, each read from OUTBOUND_GATE_TOPIC_<NAME>.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from processors.core.webhooks import WEBHOOK, load_tenant_map


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


# ---- declarations --------------------------------------------------------------------------------

_METADATA_KEY = "setting"


@dataclass(frozen=True, slots=True)
class Setting:
    """How one field is read from its environment variable (see `setting()`)."""

    env: str
    help: str
    # The value when the variable is unset or empty (for a field that only some security
    # protocols use: when one of them is in use).
    default: Any
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    # Applied to the raw value before it is checked against `choices` and parsed.
    case: Callable[[str], str] | None = None
    # (setting, value) -> the field's value; raises SettingsError naming `env`.
    parse: Callable[[Setting, str], Any] | None = None
    # The value may instead be read from the file named by <env>_FILE (a mounted secret).
    secret: bool = False
    # Only these KAFKA_SECURITY_PROTOCOL values use it (empty: always read).
    protocols: tuple[str, ...] = ()
    # Those protocols need a value (there is no default).
    required: bool = False

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.env, f"{self.env}_FILE") if self.secret else (self.env,)

    def is_set(self, env: Mapping[str, str]) -> bool:
        return any(env.get(name) for name in self.variables)

    def read(self, env: Mapping[str, str]) -> Any:
        """The value from `env`, or the default when the variable is unset or empty."""
        if self.secret:
            return _secret(env, self.env)
        raw = env.get(self.env)
        if not raw:
            return self.default
        value = self.case(raw) if self.case else raw
        if self.choices and value not in self.choices:
            raise SettingsError(f"{self.env}={value!r}: use {_either(self.choices)}")
        return self.parse(self, value) if self.parse else value

    def help_lines(self) -> dict[str, str]:
        """ENV_HELP entries: the variable (and <env>_FILE for a secret) -> one line of help."""
        protocols = f"with {' or '.join(self.protocols)}"
        notes = []
        if self.protocols and self.required:
            either = f"it or {self.env}_FILE " if self.secret else ""
            notes.append(f"{either}required {protocols}")
        elif self.protocols:
            notes.append(protocols)
        if self.choices:
            notes.append(_either(self.choices))
        if self.minimum is not None:
            notes.append(f"at least {self.minimum}")
        if self.default is not None and self.default != {}:
            notes.append(f"default {show_default(self.default)}")
        lines = {self.env: f"{self.help} ({'; '.join(notes)})" if notes else self.help}
        if self.secret:
            used = f"{protocols}; " if self.protocols else ""
            lines[f"{self.env}_FILE"] = (f"a file holding {self.env}, a mounted secret say "
                                         f"({used}instead of {self.env})")
        return lines


def setting(env: str, default: Any, help: str, *, minimum: int | None = None,
            choices: tuple[str, ...] = (), case: Callable[[str], str] | None = None,
            parse: Callable[[Setting, str], Any] | None = None, secret: bool = False,
            protocols: tuple[str, ...] = (), required: bool = False) -> Any:
    """A dataclass field read from the environment variable `env`.

    An int default is parsed as an integer and needs a `minimum`; a bool default reads
    true/false/1/0/yes/no. A field used only by some security `protocols` is None under the
    others; `default` is its value when one of them is used and the variable is unset, unless
    it is `required`.
    """
    if parse is None and isinstance(default, bool):
        parse, case = _boolean, str.lower
    elif parse is None and isinstance(default, int):
        if minimum is None:
            raise TypeError(f"{env}: an integer setting needs a minimum")
        parse = _integer
    spec = Setting(env=env, help=help, default=default, minimum=minimum, choices=choices,
                   case=case, parse=parse, secret=secret, protocols=protocols,
                   required=required)
    metadata = {_METADATA_KEY: spec}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=None if protocols else default, metadata=metadata, repr=not secret)


def declared(cls: type) -> dict[str, Setting]:
    """Field name -> its declaration, for the fields of `cls` read from the environment."""
    return {f.name: f.metadata[_METADATA_KEY] for f in fields(cls)
            if _METADATA_KEY in f.metadata}


def show_default(value: Any) -> str:
    """A default as written in an environment variable (and in ENV_HELP)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _either(choices: tuple[str, ...]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


# ---- parsers (each error names the variable) -----------------------------------------------------


def _integer(spec: Setting, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{spec.env}={raw!r} is not an integer") from exc
    if spec.minimum is not None and value < spec.minimum:
        raise SettingsError(f"{spec.env}={value} is below {spec.minimum}")
    return value


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _boolean(spec: Setting, value: str) -> bool:
    if value not in (*_TRUE, *_FALSE):
        raise SettingsError(f"{spec.env}={value!r}: use true or false")
    return value in _TRUE


def _existing_file(spec: Setting, path: str) -> str:
    if not os.path.isfile(path):
        raise SettingsError(f"{spec.env}={path!r}: no such file")
    return path


def _tenant_map(spec: Setting, path: str) -> dict[str, str]:
    try:
        return load_tenant_map(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{spec.env}={path!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SettingsError(f"{spec.env}={path!r}: {exc}") from exc


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


# ---- topics --------------------------------------------------------------------------------------


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
    # The notifier's: notifications not delivered (with the receiver's answer), and each
    # rejection's settlement (compacted, keyed by idempotency key: its de-duplication).
    notifications_dlq: str = "outbound.notifications.dlq"
    notifications_settled: str = "outbound.notifications.settled"

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


TOPIC_ENV = {f.name: f"OUTBOUND_GATE_TOPIC_{f.name.upper()}" for f in fields(Topics)}


def topics_from_env(env: Mapping[str, str]) -> Topics:
    return Topics(**{name: env[var] for name, var in TOPIC_ENV.items() if env.get(var)})


# ---- Kafka security ------------------------------------------------------------------------------

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_SASL = ("SASL_SSL", "SASL_PLAINTEXT")
_TLS = ("SSL", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every Kafka client of the gate connects (processors.runtime.kafka_security applies
    it)."""

    protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "how every Kafka client connects",
        choices=SECURITY_PROTOCOLS, case=str.upper)
    sasl_mechanism: str | None = setting(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SASL mechanism",
        choices=SASL_MECHANISMS, case=str.upper, protocols=_SASL)
    sasl_username: str | None = setting(
        "KAFKA_SASL_USERNAME", None, "SASL user", protocols=_SASL, required=True)
    sasl_password: str | None = setting(
        "KAFKA_SASL_PASSWORD", None, "SASL password", secret=True, protocols=_SASL,
        required=True)
    ssl_cafile: str | None = setting(
        "KAFKA_SSL_CAFILE", None, "PEM CA bundle the broker certificate must chain to; "
        "unset: the system store", parse=_existing_file, protocols=_TLS)
    ssl_certfile: str | None = setting(
        "KAFKA_SSL_CERTFILE", None, "PEM client certificate, for brokers that require one: "
        "mutual TLS", parse=_existing_file, protocols=_TLS)
    ssl_keyfile: str | None = setting(
        "KAFKA_SSL_KEYFILE", None, "PEM private key of KAFKA_SSL_CERTFILE, if not in that file",
        parse=_existing_file, protocols=_TLS)
    ssl_key_password: str | None = setting(
        "KAFKA_SSL_KEY_PASSWORD", None, "password of an encrypted KAFKA_SSL_KEYFILE",
        secret=True, protocols=_TLS)
    ssl_check_hostname: bool = setting(
        "KAFKA_SSL_CHECK_HOSTNAME", True, "check the broker certificate names the host")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in _TLS

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in _SASL

    def describe(self) -> str:
        """For logs: the protocol, the SASL user and whether a client certificate is used."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} user {self.sasl_username!r}")
        if self.ssl_certfile:
            parts.append("client certificate")
        return ", ".join(parts)


def security_from_env(env: Mapping[str, str]) -> KafkaSecurity:
    specs = declared(KafkaSecurity)
    protocol: str = specs["protocol"].read(env)
    used = {name: not spec.protocols or protocol in spec.protocols
            for name, spec in specs.items()}
    # A variable that would be ignored is a mistake (say, a forgotten KAFKA_SECURITY_PROTOCOL).
    for name, spec in specs.items():
        for variable in [] if used[name] else spec.variables:
            if env.get(variable):
                raise SettingsError(f"{variable} is set but KAFKA_SECURITY_PROTOCOL={protocol} "
                                    f"does not use it: use {spec.protocols[0]}")
    if not any(protocol in spec.protocols for spec in specs.values()):
        return KafkaSecurity()  # PLAINTEXT: nothing else is read
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if used[name]:
            values[name] = spec.read(env)
            if spec.required and values[name] is None:
                raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs "
                                    f"{' or '.join(spec.variables)}")
    if values.get("ssl_keyfile") and not values.get("ssl_certfile"):
        raise SettingsError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE")
    return KafkaSecurity(**values)


# ---- the gate ------------------------------------------------------------------------------------

LOG_LEVELS = ("debug", "info", "warning", "error")
STORES = ("rocksdb://", "memory://")
PROCESSING_GUARANTEES = ("exactly_once", "at_least_once")


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", "broker list, host:port[,host:port]")
    app_id: str = setting(
        "OUTBOUND_GATE_APP_ID", "outbound-gate",
        "Faust app id: consumer group and table topic prefix")
    topics: Topics = field(default_factory=Topics)  # OUTBOUND_GATE_TOPIC_<NAME>
    security: KafkaSecurity = field(default_factory=KafkaSecurity)  # KAFKA_SECURITY_* ...
    partitions: int = setting(
        "OUTBOUND_GATE_PARTITIONS", 8, "partitions of topics the gate creates: the most workers",
        minimum=1)
    replication_factor: int = setting(
        "OUTBOUND_GATE_REPLICATION_FACTOR", 1, "replication factor of topics the gate creates",
        minimum=1)
    web_port: int = setting("OUTBOUND_GATE_WEB_PORT", 6066, "HTTP port of the worker", minimum=1)
    web_host: str = setting(
        "OUTBOUND_GATE_WEB_HOST", "127.0.0.1",
        "address the HTTP server binds; 0.0.0.0 in containers")
    advertised_url: str | None = setting(
        "OUTBOUND_GATE_ADVERTISED_URL", None,
        "URL other workers forward checks to (on Kubernetes http://$(POD_IP):<web port>); "
        "unset: http://<web host>:<web port>, or with web host 0.0.0.0 the address this host "
        "reaches the first broker from")
    # The query server owns OUTBOUND_GATE_WEB_PORT; with a port of its own the worker answers
    # probes itself, so a query server that restarts does not fail the pod's liveness.
    worker_port: int = setting(
        "OUTBOUND_GATE_WORKER_PORT", 0,
        "with the query server on: the port the worker's own HTTP server (/healthz, /readyz, "
        "/metrics, /catalog) binds on the web host, for probes; 0: a free loopback port that "
        "only the query server uses", minimum=0)
    # KIP-345: a member that comes back with the same id within the session timeout gets its
    # partitions back without a rebalance, and restores only its changelog tail.
    instance_id: str | None = setting(
        "OUTBOUND_GATE_INSTANCE_ID", None,
        "static group membership id (group.instance.id), unique per worker and the same "
        "across its restarts: on Kubernetes the StatefulSet pod name; unset: dynamic "
        "membership (every restart is two rebalances)")
    # Checks answered in the worker took the stream thread's GIL: at 500 checks/s the stream
    # ran at half speed (ee3fbef:docs/performance.md, "Check API under load").
    query_server: bool = setting(
        "OUTBOUND_GATE_QUERY_SERVER", True,
        "with the rocksdb store, answer the check API in a process of its own (the query "
        "server) that owns the HTTP port and passes every other path to the worker")
    api_token: str | None = setting(
        "OUTBOUND_GATE_API_TOKEN", None,
        "bearer token of the check API (/v1/...); unset: the API answers 401", secret=True)
    policy_file: str | None = setting(
        "OUTBOUND_GATE_POLICY_FILE", None, "policy document replacing the packaged default")
    data_dir: str = setting("OUTBOUND_GATE_DATA_DIR", ".local/worker", "worker data directory")
    max_message_bytes: int = setting(
        "OUTBOUND_GATE_MAX_MESSAGE_BYTES", 1_000_000,
        "larger input values go to the dead-letter topic", minimum=1)
    log_level: str = setting(
        "OUTBOUND_GATE_LOG_LEVEL", "info", "log level", choices=LOG_LEVELS, case=str.lower)
    store: str = setting(
        "OUTBOUND_GATE_STORE", "rocksdb://",
        "recipient-state store: rocksdb:// is persistent, memory:// is not", choices=STORES)
    state_sweep_seconds: int = setting(
        "OUTBOUND_GATE_STATE_SWEEP_SECONDS", 600, "how often expired recipient state is swept",
        minimum=1)
    dedup_seconds: int = setting(
        "OUTBOUND_GATE_DEDUP_SECONDS", 3600,
        "a message_id seen again within this is dropped; 0 switches de-duplication off",
        minimum=0)
    session_timeout_seconds: int = setting(
        "OUTBOUND_GATE_SESSION_TIMEOUT_SECONDS", 15,
        "a silent worker loses its partitions after this", minimum=6)
    tenant_label_cap: int = setting(
        "OUTBOUND_GATE_TENANT_LABEL_CAP", 500,
        "tenants with their own metric label; others fold", minimum=1)
    processing_guarantee: str = setting(
        "OUTBOUND_GATE_PROCESSING_GUARANTEE", "exactly_once",
        "exactly_once uses Kafka transactions; with at_least_once a crash can repeat a decision",
        choices=PROCESSING_GUARANTEES, case=str.lower)
    batch_records: int = setting(
        "OUTBOUND_GATE_BATCH_RECORDS", 500, "most records per fetch and transaction", minimum=1)
    # librdkafka's default (fetch.min.bytes 1) answers a fetch as soon as one record is there:
    # with upstream producers that send each message alone, the route consumer fetched once per
    # produce request (600/s at 1,000 events/s), the broker's largest cost on a small machine
    # (ee3fbef:docs/performance.md, "Third look").
    fetch_wait_ms: int = setting(
        "OUTBOUND_GATE_FETCH_WAIT_MS", 10,
        "how long the broker holds the route consumer's fetch to gather records (unless 1 MB "
        "is there first), milliseconds; 0 answers as soon as any record is there", minimum=0)
    transaction_timeout_seconds: int = setting(
        "OUTBOUND_GATE_TRANSACTION_TIMEOUT_SECONDS", 10,
        "the broker aborts a transaction left open by a dead worker after this (its partitions'"
        " next owner waits for it)", minimum=5)
    # A full collection walks every tracked object holding the GIL; with the caches filled it
    # paused the routing 56-75 ms, frozen survivors 25-33 ms (tests.benchmarks.router_cpu
    # --events 200000, with and without --gc-freeze; docs/performance.md, "Knobs").
    gc_freeze: bool = setting(
        "OUTBOUND_GATE_GC_FREEZE", True,
        "freeze what survives each full garbage collection (gc.freeze), in the worker and the "
        "query server, so that the next ones walk only newer objects; frozen cyclic garbage is "
        "freed only by a sweep every 10 minutes")
    # Meta webhook bodies name no tenant: "waba:<WABA id>" / "phone:<phone_number_id>" -> tenant,
    # used when a record has no tenant_id header.
    tenant_map: Mapping[str, str] = setting(
        "OUTBOUND_GATE_TENANT_MAP", {},
        'JSON file {"waba:<WABA id>": tenant, "phone:<phone_number_id>": tenant}: the tenant '
        "of Meta webhook bodies without a tenant_id record header", parse=_tenant_map)

    @property
    def faust_group(self) -> str:
        """Faust's consumer group (the catalog agent): the app id."""
        return self.app_id

    @property
    def route_group(self) -> str:
        """The route loop's consumer group: it reads the outbound topic, so its lag is the
        gate's backlog (KEDA scales on it)."""
        return f"{self.app_id}-route"

    @property
    def repartition_topic(self) -> str:
        """Where records are re-keyed by tenant_id:recipient_e164 (created by the gate)."""
        return f"{self.app_id}-recipient-events"

    @property
    def changelog_topic(self) -> str:
        """The recipient state's changelog (compacted; created by the gate)."""
        return f"{self.app_id}-recipient-state-changelog"

    @property
    def catalog_changelog_topic(self) -> str:
        """The template catalog table's changelog (Faust's name for it; compacted), which every
        worker follows in full (processors.runtime.catalog.CatalogReplica)."""
        return f"{self.app_id}-template-catalog-changelog"


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    values = {name: spec.read(env) for name, spec in declared(Settings).items()
              if spec.is_set(env)}
    return Settings(topics=topics_from_env(env), security=security_from_env(env), **values)


def _env_help() -> Iterator[tuple[str, str]]:
    """Every variable the gate reads, with its help, in the order of the fields."""
    for f in fields(Settings):
        if f.name == "topics":
            for name, variable in TOPIC_ENV.items():
                yield variable, f"topic name (default {getattr(Topics(), name)})"
        elif f.name == "security":
            for spec in declared(KafkaSecurity).values():
                yield from spec.help_lines().items()
        elif _METADATA_KEY in f.metadata:
            yield from f.metadata[_METADATA_KEY].help_lines().items()


# Variable -> help, for the worker's --help: Kafka's first, the topic names last.
ENV_HELP: dict[str, str] = dict(sorted(
    _env_help(), key=lambda item: (not item[0].startswith("KAFKA_"),
                                   item[0] in TOPIC_ENV.values())))
