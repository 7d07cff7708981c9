"""The gate through a broker that speaks only TLS: SASL_SSL with SCRAM-SHA-512, and mutual TLS.

One secure broker for the module, started by deploy/local/kafka.sh in secure mode with its own
home and ports (never the shared plaintext broker), certificates made by
deploy/local/make-certs.sh in a temporary directory, the SCRAM user written when the storage is
formatted. A refused password or certificate must stop the worker and the CLI at once with a
clear message and exit code 2.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from processors.settings import TOPIC_ENV
from tests.e2e.conftest import REPO, Gate, free_port, poll, start_worker, stop_worker
from tests.e2e.test_worker import decision_for, new_message, publish_template

pytestmark = pytest.mark.e2e

KAFKA_SH = REPO / "deploy/local/kafka.sh"
MAKE_CERTS = REPO / "deploy/local/make-certs.sh"
USER = "gate"
DEFAULT_POLICY = REPO / "processors/core/policy/default_policy.json"


@dataclass(frozen=True)
class SecureBroker:
    sasl_bootstrap: str
    mtls_bootstrap: str
    tls: Path
    password: str
    other_ca: Path  # a CA the broker's certificate does not chain to

    def sasl_env(self, password: str | None = None, cafile: Path | None = None) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.sasl_bootstrap,
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": USER,
                "KAFKA_SASL_PASSWORD": self.password if password is None else password,
                "KAFKA_SSL_CAFILE": str(cafile or self.tls / "ca.crt")}

    def mtls_env(self, client_cert: bool = True) -> dict[str, str]:
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.mtls_bootstrap,
               "KAFKA_SECURITY_PROTOCOL": "SSL",
               "KAFKA_SSL_CAFILE": str(self.tls / "ca.crt")}
        if client_cert:
            env |= {"KAFKA_SSL_CERTFILE": str(self.tls / "client.crt"),
                    "KAFKA_SSL_KEYFILE": str(self.tls / "client.key")}
        return env


def _make_certs(directory: Path) -> None:
    subprocess.run([str(MAKE_CERTS), str(directory)], check=True, capture_output=True,
                   timeout=60)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    home = tmp_path_factory.mktemp("secure-kafka")
    _make_certs(home / "tls")
    _make_certs(home / "other-ca")
    password = secrets.token_urlsafe(16)
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    port, mtls_port, controller_port = sorted(ports)
    env = {
        **{k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"},
        "PYTHON": sys.executable,
        "KAFKA_LOCAL_HOME": str(home),
        # The jars of this checkout's plaintext broker, fetched once.
        "KAFKA_LOCAL_LIBS": str(REPO / ".local/kafka/libs"),
        "KAFKA_LOCAL_SECURITY": "tls",
        "KAFKA_LOCAL_TLS_DIR": str(home / "tls"),
        "KAFKA_LOCAL_PORT": str(port),
        "KAFKA_LOCAL_MTLS_PORT": str(mtls_port),
        "KAFKA_LOCAL_CONTROLLER_PORT": str(controller_port),
        "KAFKA_LOCAL_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "KAFKA_LOCAL_SCRAM_USERS": f"{USER}:{password}",
    }
    # Below pytest-timeout's 300 s, so that a broker that never starts says why.
    started = subprocess.run([str(KAFKA_SH), "up"], env=env, capture_output=True, text=True,
                             timeout=240)
    try:
        assert started.returncode == 0, f"secure Kafka did not start:\n{started.stderr}"
        assert started.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"
        yield SecureBroker(f"127.0.0.1:{port}", f"127.0.0.1:{mtls_port}", home / "tls",
                           password, home / "other-ca" / "ca.crt")
    finally:
        subprocess.run([str(KAFKA_SH), "down"], env=env, capture_output=True, timeout=120)


def _decides_through(gate: Gate) -> None:
    """A US marketing message rejected, a Canadian one accepted: both read back over TLS."""
    publish_template(gate, "spring_sale", "MARKETING", "APPROVED")
    reader = gate.reader()
    try:
        us = new_message(recipient="+12025550143",
                         template={"name": "spring_sale", "language": "en_US"})
        ca = new_message(recipient="+14165550123",
                         template={"name": "spring_sale", "language": "en_US"})
        gate.send(gate.topics.outbound, us["recipient"], us)
        gate.send(gate.topics.outbound, ca["recipient"], ca)
        rejected = decision_for(reader, us["message_id"])
        assert rejected.topic == gate.topics.rejected
        assert rejected.value["error_code"] == "MARKETING_PAUSED_US"
        assert decision_for(reader, ca["message_id"]).topic == gate.topics.accepted
    finally:
        reader.close()


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processors.cli.main", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _exits_with_error(gate: Gate, within: float) -> str:
    """The worker stopped by itself, non-zero, within the deadline; returns its log."""
    poll(lambda: gate.process.poll() is not None, within,
         f"the worker to exit on its own (log: {gate.log_path})")
    assert gate.process.returncode == 2, gate.log()
    return gate.log()


def test_sasl_ssl_scram_worker_and_cli(secure_broker: SecureBroker, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    gate = start_worker(secure_broker.sasl_bootstrap, tmp_path, run_id,
                        extra_env=secure_broker.sasl_env())
    try:
        _decides_through(gate)
        # The CLI with the same settings: the policy goes to the worker's policy topic.
        topic_env = {var: getattr(gate.topics, name) for name, var in TOPIC_ENV.items()}
        published = _cli(["policy", "publish", str(DEFAULT_POLICY)],
                         {**secure_broker.sasl_env(), **topic_env})
        assert published.returncode == 0, published.stderr
        assert f"published to {gate.topics.policy}" in published.stdout
    finally:
        assert stop_worker(gate) == 0, gate.log()
    assert secure_broker.password not in gate.log()
    assert "Authenticated as gate via SCRAM-SHA-512" in gate.log()


def test_mutual_tls_worker(secure_broker: SecureBroker, tmp_path: Path) -> None:
    gate = start_worker(secure_broker.mtls_bootstrap, tmp_path, uuid.uuid4().hex[:10],
                        extra_env=secure_broker.mtls_env())
    try:
        _decides_through(gate)
    finally:
        assert stop_worker(gate) == 0, gate.log()


def test_wrong_password_stops_the_worker(secure_broker: SecureBroker, tmp_path: Path) -> None:
    started = time.monotonic()
    gate = start_worker(secure_broker.sasl_bootstrap, tmp_path, uuid.uuid4().hex[:10],
                        extra_env=secure_broker.sasl_env(password="not-the-password"),
                        wait=False)
    log = _exits_with_error(gate, within=30)
    assert (f"Kafka authentication failed for user '{USER}' (SASL SCRAM-SHA-512) at "
            f"{secure_broker.sasl_bootstrap}: check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            in log)
    assert "not-the-password" not in log
    assert time.monotonic() - started < 30


def test_untrusted_certificate_stops_the_worker(secure_broker: SecureBroker,
                                                tmp_path: Path) -> None:
    gate = start_worker(secure_broker.sasl_bootstrap, tmp_path, uuid.uuid4().hex[:10],
                        extra_env=secure_broker.sasl_env(cafile=secure_broker.other_ca),
                        wait=False)
    log = _exits_with_error(gate, within=30)
    assert (f"TLS handshake with {secure_broker.sasl_bootstrap} failed: certificate verify "
            f"failed" in log)
    assert "(check KAFKA_SSL_CAFILE)" in log


def test_cli_wrong_password_and_missing_client_certificate(secure_broker: SecureBroker) -> None:
    started = time.monotonic()
    refused = _cli(["policy", "publish", str(DEFAULT_POLICY)],
                   secure_broker.sasl_env(password="not-the-password"), timeout=30)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"outbound-gate policy: Kafka authentication failed for user '{USER}' (SASL "
        f"SCRAM-SHA-512) at {secure_broker.sasl_bootstrap}: check KAFKA_SASL_USERNAME and "
        f"KAFKA_SASL_PASSWORD")
    loadgen = _cli(["loadgen", "--count", "10", "--prefix", f"secure-{uuid.uuid4().hex[:8]}"],
                   secure_broker.mtls_env(client_cert=False), timeout=30)
    assert loadgen.returncode == 2, loadgen.stderr
    assert "refused the TLS client certificate" in loadgen.stderr
    assert "check KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE" in loadgen.stderr
    assert time.monotonic() - started < 30
