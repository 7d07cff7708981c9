"""The one place that turns KafkaSecurity settings into client configuration.

kafka-python and aiokafka take the same keyword arguments (security_protocol, sasl_mechanism,
sasl_plain_username, sasl_plain_password, ssl_context), so client_options() serves both; Faust
takes broker_credentials (faust_credentials()), which its aiokafka driver turns into those same
arguments. Every client shares one SSLContext per configuration. librdkafka (confluent-kafka,
the route loop's client) takes its own configuration names: librdkafka_options().

preflight() makes one connection to the brokers before anything else does: both client
libraries retry a refused password or an untrusted certificate until their own timeout and then
report only "unable to bootstrap", while a single aiokafka connection raises the real cause at
once. It maps that cause to a one-line message naming the variable to check.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from typing import TYPE_CHECKING, Any

from processors.settings import KafkaSecurity, SettingsError

if TYPE_CHECKING:
    import faust


class KafkaAccessError(Exception):
    """Kafka refused the connection's security (TLS or SASL): retrying will not help."""


@functools.cache
def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    if not security.uses_ssl:
        return None
    try:
        context = ssl.create_default_context(cafile=security.ssl_cafile)
    except ssl.SSLError as exc:
        raise SettingsError(f"KAFKA_SSL_CAFILE={security.ssl_cafile!r} is not a PEM CA bundle "
                            f"({exc.reason or exc})") from exc
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_certfile:
        try:
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile,
                                    security.ssl_key_password)
        except ssl.SSLError as exc:
            raise SettingsError(
                f"KAFKA_SSL_CERTFILE={security.ssl_certfile!r} with KAFKA_SSL_KEYFILE="
                f"{security.ssl_keyfile!r}: not a PEM certificate and its private key, or a "
                f"wrong KAFKA_SSL_KEY_PASSWORD ({exc.reason or exc})") from exc
    return context


def client_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for kafka-python's and aiokafka's clients."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_sasl:
        options.update(sasl_mechanism=security.sasl_mechanism,
                       sasl_plain_username=security.sasl_username,
                       sasl_plain_password=security.sasl_password)
    if security.uses_ssl:
        options["ssl_context"] = ssl_context(security)
    return options


def librdkafka_options(security: KafkaSecurity) -> dict[str, str]:
    """The same settings as librdkafka configuration (confluent-kafka's clients)."""
    ssl_context(security)  # unreadable TLS files: the same SettingsError as the other clients
    options = {"security.protocol": security.protocol}
    if security.uses_sasl:
        options.update({"sasl.mechanism": security.sasl_mechanism or "",
                        "sasl.username": security.sasl_username or "",
                        "sasl.password": security.sasl_password or ""})
    if security.uses_ssl:
        for name, value in (("ssl.ca.location", security.ssl_cafile),
                            ("ssl.certificate.location", security.ssl_certfile),
                            ("ssl.key.location", security.ssl_keyfile),
                            ("ssl.key.password", security.ssl_key_password)):
            if value:
                options[name] = value
        if not security.ssl_cafile:  # the system store: where this machine keeps it
            options["ssl.ca.location"] = "probe"
        if security.ssl_certfile and not security.ssl_keyfile:
            options["ssl.key.location"] = security.ssl_certfile  # key and certificate in one PEM
        options["ssl.endpoint.identification.algorithm"] = (
            "https" if security.ssl_check_hostname else "none")
    return options


def faust_credentials(security: KafkaSecurity) -> faust.SASLCredentials | faust.SSLCredentials \
        | None:
    """faust.App(broker_credentials=...): SASLCredentials with a context is SASL_SSL."""
    import faust  # not for the CLI's plain clients: Faust is slow to import

    if security.uses_sasl:
        return faust.SASLCredentials(username=security.sasl_username,
                                     password=security.sasl_password,
                                     mechanism=security.sasl_mechanism,
                                     ssl_context=ssl_context(security))
    if security.uses_ssl:
        return faust.SSLCredentials(ssl_context(security))
    return None


def _servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    servers = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        servers.append((host.strip("[]") or server.strip(), int(port) if port.isdigit() else 9092))
    return servers


def _unreachable(exc: BaseException) -> bool:
    """Nothing answered (yet): the clients' own retries are right for that."""
    return isinstance(exc, ConnectionRefusedError | socket.gaierror | TimeoutError) or (
        isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError | ConnectionError))


def explain(exc: BaseException, where: str, security: KafkaSecurity) -> str | None:
    """The one-line reason for a failed secure connection; None when it is not about security."""
    from aiokafka.errors import (
        KafkaConnectionError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    cause = exc.__cause__ if isinstance(exc, KafkaConnectionError) else exc
    if isinstance(exc, SaslAuthenticationFailed):
        return (f"Kafka authentication failed for user {security.sasl_username!r} "
                f"(SASL {security.sasl_mechanism}) at {where}: check KAFKA_SASL_USERNAME and "
                f"KAFKA_SASL_PASSWORD")
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (f"the broker at {where} does not offer SASL {security.sasl_mechanism}: "
                f"check KAFKA_SASL_MECHANISM ({exc})")
    if isinstance(cause, ssl.SSLCertVerificationError):
        hint = "KAFKA_SSL_CAFILE" + (", KAFKA_SSL_CHECK_HOSTNAME"
                                     if "mismatch" in str(cause.verify_message) else "")
        return (f"TLS handshake with {where} failed: certificate verify failed: "
                f"{cause.verify_message} (check {hint})")
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or str(cause)
        if "CERTIFICATE" in reason.upper():
            return (f"the broker at {where} refused the TLS client certificate ({reason}): "
                    f"check KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE")
        return (f"TLS handshake with {where} failed ({reason}): does the listener speak "
                f"KAFKA_SECURITY_PROTOCOL={security.protocol}?")
    if _unreachable(exc):
        return None
    # Connected, then closed during the handshake: a listener of another protocol.
    return (f"connection to {where} closed during the handshake ({type(exc).__name__}): does the "
            f"listener speak KAFKA_SECURITY_PROTOCOL={security.protocol}?")


async def _connect(host: str, port: int, options: dict[str, Any], timeout: float) -> None:
    from aiokafka.conn import create_conn

    conn = await asyncio.wait_for(
        create_conn(host, port, client_id="outbound-gate-preflight",
                    request_timeout_ms=int(timeout * 1000), **options),
        timeout)
    conn.close()


async def _preflight(bootstrap_servers: str, security: KafkaSecurity, timeout: float) -> None:
    options = client_options(security)  # unreadable TLS files: SettingsError, before connecting
    refused: list[str] = []
    for host, port in _servers(bootstrap_servers):
        where = f"{host}:{port}"
        try:
            await _connect(host, port, options, timeout)
        except Exception as exc:
            reason = explain(exc, where, security)
            if reason is not None:
                refused.append(reason)
            continue
        return  # one broker took us: the clients will find the others through it
    if refused:
        raise KafkaAccessError(refused[0])


def preflight(bootstrap_servers: str, security: KafkaSecurity, timeout: float = 10.0) -> None:
    """One connection per bootstrap server until one succeeds.

    Raises KafkaAccessError when a broker refused the TLS or SASL handshake; returns quietly when
    one connected, or when none answered at all (the clients retry that themselves).
    """
    asyncio.run(_preflight(bootstrap_servers, security, timeout))


def access_problem(bootstrap_servers: str, security: KafkaSecurity,
                   timeout: float = 10.0) -> str | None:
    """preflight() for the command line: the reason to stop (exit 2), or None to go on."""
    try:
        preflight(bootstrap_servers, security, timeout)
    except (KafkaAccessError, SettingsError) as exc:
        return str(exc)
    return None
