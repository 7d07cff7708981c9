"""Real Kafka and a real worker process for end-to-end tests.

The local broker comes from deploy/local/kafka.sh (started if needed) unless
KAFKA_BOOTSTRAP_SERVERS points at a cluster. Each test session gets its own topic names and
consumer group, so runs never see each other's records.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from processors.settings import TOPIC_ENV, KafkaSecurity, Topics, security_from_env
from processors.tools.kafka_io import OutputReader, producer, send_json

REPO = Path(__file__).resolve().parents[2]


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="session", autouse=True)
def no_stray_workers() -> Iterator[None]:
    """Whatever a failed test left running is killed when the session ends."""
    yield
    for process in STARTED:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    result = subprocess.run([str(REPO / "deploy/local/kafka.sh"), "up"], capture_output=True,
                            text=True, timeout=240,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, f"local Kafka did not start:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def poll(condition: Callable[[], bool], timeout: float, what: str,
         alive: Callable[[], str | None] = lambda: None) -> None:
    """Wait until condition() holds; fail saying what was awaited (or why it never can be)."""
    deadline = time.monotonic() + timeout
    while not condition():
        problem = alive()
        if problem:
            pytest.fail(f"{problem} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)  # pacing between polls of a condition with a deadline


@dataclass
class Gate:
    bootstrap: str
    topics: Topics
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def security(self) -> KafkaSecurity:
        """The worker's own Kafka security settings (TLS, SASL), for the test's clients."""
        return security_from_env(self.env)

    def problem(self) -> str | None:
        if self.process.poll() is not None:
            return f"the worker exited with {self.process.returncode}; log: {self.log_path}"
        return None

    def send(self, topic: str, key: str | None, value: Any) -> None:
        out = producer(self.bootstrap, self.security)
        send_json(out, topic, key, value)
        out.flush()
        out.close()

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        out = producer(self.bootstrap, self.security)
        out.send(topic, key=key, value=value)
        out.flush()
        out.close()

    def reader(self) -> OutputReader:
        return OutputReader(self.bootstrap,
                            [self.topics.accepted, self.topics.rejected, self.topics.dlq],
                            self.security)

    def catalog_entry(self, key: str) -> dict[str, Any] | None:
        status, body = http_json(f"{self.base_url}/catalog/{key}")
        return body["entry"] if status == 200 else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(bootstrap: str, tmp: Path, run_id: str,
                 extra_env: dict[str, str] | None = None, wait: bool = True,
                 name: str = "worker") -> Gate:
    """A worker process with topics and consumer group named after run_id, data under tmp.

    Workers with the same run_id share topics and consumer group; name keeps their data
    directories and logs apart (and the same name again restarts a worker on its own data).
    """
    topics = Topics(**{name: f"{getattr(Topics(), name)}.{run_id}" for name in TOPIC_ENV})
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OUTBOUND_GATE_APP_ID": f"outbound-gate-test-{run_id}",
        "OUTBOUND_GATE_WEB_PORT": str(port),
        "OUTBOUND_GATE_DATA_DIR": str(tmp / f"{name}-data"),
        "OUTBOUND_GATE_LOG_LEVEL": "info",
        "OUTBOUND_GATE_PARTITIONS": "4",
        **{var: getattr(topics, name) for name, var in TOPIC_ENV.items()},
        **(extra_env or {}),
    }
    log_path = tmp / f"{name}.log"
    with open(log_path, "ab") as log:  # a restarted worker appends to the same log
        process = subprocess.Popen([sys.executable, "-m", "processors.cli.main", "worker"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    STARTED.append(process)
    gate = Gate(bootstrap, topics, f"http://127.0.0.1:{port}", process, log_path, env)
    if wait:
        wait_ready(gate)
    return gate


def wait_ready(gate: Gate, timeout: float = 120) -> None:
    def ready() -> bool:
        try:
            return http_json(f"{gate.base_url}/readyz")[0] == 200
        except OSError:
            return False

    poll(ready, timeout, "the worker's /readyz to answer 200 (partitions assigned, tables "
         "recovered, policy topic read)", gate.problem)


def stop_worker(gate: Gate) -> int:
    if gate.process.poll() is None:
        gate.process.send_signal(signal.SIGTERM)
        try:
            return gate.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            gate.process.kill()
            pytest.fail(f"the worker did not stop within 60 s of SIGTERM; log: {gate.log_path}")
    return gate.process.returncode


@pytest.fixture(scope="module")
def gate(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    tmp = tmp_path_factory.mktemp("worker")
    running = start_worker(bootstrap, tmp, uuid.uuid4().hex[:10])
    yield running
    code = stop_worker(running)
    assert code == 0, f"the worker exited with {code} on SIGTERM; log: {running.log_path}"


def decided_after(gate: Gate, reader: OutputReader, sentinels: list[dict[str, Any]],
                  seconds: float) -> None:
    """Sends the sentinel messages through gate and waits for their decisions: any duplicate
    of an earlier decision on their partitions would have come before them."""
    for doc in sentinels:
        gate.send(gate.topics.outbound, doc["recipient"], doc)
    ids = {doc["message_id"] for doc in sentinels}
    reader.wait_for(lambda outs: ids <= {o.value.get("message_id") for o in outs}, seconds,
                    "the sentinels")
