"""Kafka security settings: parsing, validation, and what each client library is given."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from processors.runtime.kafka_security import (
    access_problem,
    client_options,
    faust_credentials,
    preflight,
)
from processors.settings import KafkaSecurity, SettingsError, from_env, security_from_env


def test_plaintext_by_default() -> None:
    security = from_env({}).security
    assert security == KafkaSecurity()
    assert client_options(security) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None


def test_sasl_ssl_defaults_to_scram_sha_512(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                                  "KAFKA_SASL_USERNAME": "gate",
                                  "KAFKA_SASL_PASSWORD_FILE": str(password)})
    assert security.protocol == "SASL_SSL"
    assert security.sasl_mechanism == "SCRAM-SHA-512"
    assert security.sasl_password == "s3cret"  # the file's trailing newline is not part of it
    assert "s3cret" not in repr(security)
    options = client_options(security)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("gate", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname
    credentials = faust_credentials(security)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_ssl_without_sasl_gives_ssl_credentials() -> None:
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL",
                                  "KAFKA_SSL_CHECK_HOSTNAME": "false"})
    options = client_options(security)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert not options["ssl_context"].check_hostname
    credentials = faust_credentials(security)
    assert credentials is not None and credentials.protocol.value == "SSL"


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "x"},
     "needs KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "gate"},
     "needs KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "gate",
      "KAFKA_SASL_PASSWORD": "x", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "gate",
      "KAFKA_SASL_PASSWORD": "x", "KAFKA_SASL_PASSWORD_FILE": "/x"}, "not both"),
    ({"KAFKA_SASL_USERNAME": "gate"}, "KAFKA_SASL_USERNAME is set but"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "gate",
      "KAFKA_SASL_PASSWORD": "x", "KAFKA_SSL_CAFILE": "/x"}, "KAFKA_SSL_CAFILE is set but"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "no such file"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
     "KAFKA_SSL_CHECK_HOSTNAME"),
])
def test_unusable_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_env(env)


def test_preflight_leaves_an_unreachable_broker_to_the_clients() -> None:
    # Nothing listens there: not a security problem, so no error (the clients retry): the
    # command line is told to go on (access_problem() is preflight() with its refusal caught).
    preflight("127.0.0.1:1", KafkaSecurity(), timeout=2)
    assert access_problem("127.0.0.1:1", KafkaSecurity(), timeout=2) is None


def test_unreadable_tls_files_are_named_before_any_connection(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL",
                                  "KAFKA_SSL_CAFILE": str(not_pem)})
    problem = access_problem("127.0.0.1:1", security, timeout=2)
    assert problem is not None and problem.startswith(f"KAFKA_SSL_CAFILE={str(not_pem)!r} is not")
    with_cert = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL",
                                   "KAFKA_SSL_CERTFILE": str(not_pem)})
    with pytest.raises(SettingsError, match="KAFKA_SSL_CERTFILE="):
        client_options(with_cert)
