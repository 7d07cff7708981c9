"""The query server's lifecycle with a real worker: a query server that dies is started again
and answers checks; one whose worker is killed does not outlive it."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Gate, free_port, http_json, poll, start_worker, stop_worker
from tests.e2e.test_check_api import TENANT, TOKEN, check, known_tenant
from tests.e2e.test_live_state import free_form, new_recipient

pytestmark = pytest.mark.e2e


def query_server_pid(gate: Gate) -> int | None:
    """The pid the worker logged for the query server it started last."""
    pid = None
    for line in gate.log().splitlines():
        if '"query_server_start"' in line:
            pid = json.loads(line)["pid"]
    return pid


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent has not reaped it yet).
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def ready(gate: Gate) -> bool:
    try:
        return http_json(f"{gate.base_url}/readyz")[0] == 200
    except OSError:
        return False


def answers(url: str) -> bool:
    try:
        return http_json(url)[0] == 200
    except OSError:
        return False


def test_a_dead_query_server_is_replaced_and_dies_with_its_worker(bootstrap: str,
                                                                  tmp_path: Path) -> None:
    worker_port = free_port()  # the probes' port, as on Kubernetes
    gate = start_worker(bootstrap, tmp_path, uuid.uuid4().hex[:10],
                        {"OUTBOUND_GATE_API_TOKEN": TOKEN,
                         "OUTBOUND_GATE_WORKER_PORT": str(worker_port)})
    known_tenant(gate)
    body = json.dumps(free_form(new_recipient(), TENANT)).encode()
    assert check(gate, body)[0] == 200
    first = query_server_pid(gate)
    assert first is not None and running(first)
    os.kill(first, signal.SIGKILL)
    # Liveness asks the worker on its own port: it answers while the query server is away.
    alive, public_down = [], 0

    def answered_again() -> bool:
        nonlocal public_down
        alive.append(answers(f"http://127.0.0.1:{worker_port}/healthz"))
        if not answers(f"{gate.base_url}/healthz"):
            public_down += 1
            return False
        return query_server_pid(gate) not in (None, first)

    poll(answered_again, 60, "the worker to start a new query server", gate.problem)
    assert public_down, "the query server's port never went away: no gap was observed"
    assert all(alive), "the worker's liveness port failed while its query server was away"
    poll(lambda: ready(gate) and check(gate, body)[0] == 200, 60,
         "the new query server to answer checks", gate.problem)
    assert '"query_server_died"' in gate.log()

    second = query_server_pid(gate)
    assert second is not None
    gate.process.kill()  # no clean stop: the query server must notice on its own
    gate.process.wait(timeout=30)
    poll(lambda: not running(second), 30, "the query server to stop after its worker died")
    assert stop_worker(gate) == -signal.SIGKILL
