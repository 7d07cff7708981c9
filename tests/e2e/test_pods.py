"""The gate as deploy/k8s runs it: three pods, each in a network namespace of its own with its
own address, all binding 0.0.0.0 on the same ports, configured from the manifests themselves
(tests/e2e/pods.py), against a broker in a namespace of its own.

- Every pod answers POST /v1/check and GET /v1/recipients for 300 recipients spread over every
  partition, forwarding to the owner where needed: only the owner holds a recipient's state, so
  an answer from the wrong pod's state would say the window is closed.
- A rolling restart (highest ordinal first, as a StatefulSet rolls) moves no partition of the
  route group (static membership) and restores only the changelog tail from the pod's volume;
  every message sent during it is decided exactly once.
- A pod SIGKILLed mid-stream: its partitions wait out the session timeout, then move to the
  others; every message is decided exactly once; the pod comes back on its volume.
"""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from processors.core.enrich import parse_recipient
from processors.runtime import kafka_clients
from processors.runtime.engine.partitioner import partition_for
from processors.settings import Settings, from_env
from processors.tools.client import OutboundProducer
from tests.e2e.pods import (
    Broker,
    Network,
    Pod,
    PodSpec,
    generated_secrets,
    netns_unavailable,
    one,
    pod_env,
    probe,
    wait,
)
from tests.e2e.test_live_state import free_form, new_recipient, now_rfc3339
from tests.factories import inbound, template_entry

# A rolling restart of three pods and a takeover after the session timeout take minutes; every
# wait inside has its own, shorter deadline.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PODS = 3
USERS = 300
TENANT = "pods"


@dataclass
class Cluster:
    network: Network
    broker: Broker
    pods: list[Pod]
    token: str
    settings: Settings
    users: list[str] = field(default_factory=list)
    opened: set[str] = field(default_factory=set)

    def ready(self, pod: Pod) -> bool:
        path, port = probe("readinessProbe")
        return get(pod.spec.ip, port, path)[0] == 200

    def all_owned(self) -> bool:
        owned = [pod.owned() for pod in self.pods if pod.problem() is None]
        return sum(map(len, owned)) == self.settings.partitions and \
            set().union(*owned) == set(range(self.settings.partitions))

    def problem(self) -> str | None:
        return next((p for p in (pod.problem() for pod in self.pods) if p), None)


def get(host: str, port: int, path: str, token: str | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(host, port, timeout=15)
    try:
        return request(connection, path, token, body)
    except OSError:
        return 0, {}, None
    finally:
        connection.close()


def request(connection: http.client.HTTPConnection, path: str, token: str | None,
            body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection.request("GET" if body is None else "POST", path, body=body, headers=headers)
    response = connection.getresponse()
    raw = response.read()
    return response.status, dict(response.getheaders()), json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def cluster(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # `bootstrap`: the local broker's set-up has fetched the Kafka jars the namespaced one uses.
    why = netns_unavailable()
    if why:
        pytest.skip(f"pods need network namespaces: {why}")
    tmp = tmp_path_factory.mktemp("pods")
    network = Network()
    network.up()
    pods: list[Pod] = []
    broker: Broker | None = None
    try:
        broker = Broker(network, tmp / "kafka")
        broker.up()
        token = secrets.token_hex(16)
        (secret,) = generated_secrets()
        statefulset = one("StatefulSet")["metadata"]["name"]
        for ordinal in range(PODS):
            name = f"{statefulset}-{ordinal}"
            address = network.add_host(name)
            volume = tmp / name / "data"
            volume.mkdir(parents=True)
            spec = PodSpec(name, address, volume,
                           {(secret, "OUTBOUND_GATE_API_TOKEN"): token})
            env = pod_env(spec, {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                                 "OUTBOUND_GATE_REPLICATION_FACTOR": "1"})
            pods.append(Pod(spec, network, env, tmp / f"{name}.log"))
        settings = from_env(pods[0].env)
        made = Cluster(network, broker, pods, token, settings)
        for pod in pods:
            pod.start()
        for pod in pods:
            wait(lambda pod=pod: made.ready(pod), 180,  # type: ignore[misc]
                 f"{pod.spec.name}'s readiness probe", made.problem)
        wait(made.all_owned, 60, "the route partitions spread over the three pods",
             made.problem)
        yield made
    finally:
        for pod in pods:
            if pod.process is not None and pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait(timeout=30)
        if broker is not None:
            broker.down()
        network.down()


def send(cluster: Cluster, topic: str, key: str, value: dict[str, Any]) -> None:
    out = kafka_clients.producer(cluster.broker.bootstrap)
    out.send(topic, key=key.encode(), value=json.dumps(value).encode()).get(timeout=30)
    out.close()


def users_on_every_partition(partitions: int) -> list[str]:
    """USERS new numbers, at least one on each partition."""
    while True:
        users = [new_recipient() for _ in range(USERS)]
        spread = {partition_for(f"{TENANT}:{parse_recipient(u).e164}", partitions)
                  for u in users}
        if spread == set(range(partitions)):
            return users


def batch_check(cluster: Cluster, pod: Pod) -> list[dict[str, Any]]:
    body = json.dumps([free_form(user, TENANT) for user in cluster.users]).encode()
    status, _, answer = get(pod.spec.ip, cluster.settings.web_port, "/v1/check",
                            cluster.token, body)
    assert status == 200, answer
    results: list[dict[str, Any]] = answer["results"]
    return results


def test_every_pod_answers_for_every_recipient(cluster: Cluster) -> None:
    pods, settings = cluster.pods, cluster.settings
    # Each pod advertises its own address, not the 0.0.0.0 it binds.
    for pod in pods:
        (start,) = list(pod.log_events("start"))[-1:]
        assert start["advertised_url"] == f"http://{pod.spec.ip}:{settings.web_port}"
        assert start["instance_id"] == pod.spec.name
    key = f"{TENANT}:welcome:en_US"
    send(cluster, settings.topics.templates, key, template_entry("welcome", "UTILITY",
                                                                  tenant_id=TENANT))
    wait(lambda: all(get(p.spec.ip, settings.web_port, f"/catalog/{key}")[0] == 200
                     for p in pods), 60, "the tenant's template in every pod's catalog",
         cluster.problem)
    cluster.users = users_on_every_partition(settings.partitions)
    cluster.opened = set(cluster.users[::2])
    for user in cluster.opened:  # an inbound message opens the service window
        send(cluster, settings.topics.inbound, user, inbound(user, now_rfc3339(), TENANT))
    expected = ["accepted" if user in cluster.opened else "rejected" for user in cluster.users]

    def decided_as_expected() -> bool:
        return [r.get("decision") for r in batch_check(cluster, pods[0])] == expected

    wait(decided_as_expected, 60, "checks to see the 150 service windows open",
         cluster.problem)
    for pod in pods:
        results = batch_check(cluster, pod)
        assert [r["decision"] for r in results] == expected, pod.spec.name
        assert {r["error_code"] for r in results if r["decision"] == "rejected"} == \
            {"OUTSIDE_SERVICE_WINDOW"}
        connection = http.client.HTTPConnection(pod.spec.ip, settings.web_port, timeout=15)
        for user in cluster.users:
            e164 = parse_recipient(user).e164
            assert e164 is not None
            path = f"/v1/recipients/{TENANT}/{urllib.parse.quote(e164, safe='')}"
            status, _, view = request(connection, path, cluster.token)
            assert status == 200, view
            assert view["user"] == e164
            assert (view["service_window"]["open_until"] is not None) == \
                (user in cluster.opened), (pod.spec.name, view)
        connection.close()
    for pod in pods:  # personal data stays out of the logs
        log = pod.log_path.read_text(errors="replace")
        assert not any(user in log for user in cluster.users[:20])


class Stream:
    """Sends outbound messages at a steady pace on a thread until stopped; remembers their ids."""

    def __init__(self, cluster: Cluster, per_second: float = 100) -> None:
        self.cluster, self.pause = cluster, 1 / per_second
        self.sent: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with OutboundProducer(self.cluster.broker.bootstrap,
                                  self.cluster.settings.topics.outbound) as gate:
                index = 0
                while not self.stopped.is_set():
                    message = free_form(self.cluster.users[index % USERS], TENANT)
                    gate.send(message)
                    self.sent.append(message["message_id"])
                    index += 1
                    self.stopped.wait(self.pause)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)
        assert self.error is None, f"the stream's producer failed: {self.error!r}"


def decided_once(cluster: Cluster, sent: list[str], timeout: float,
                 running: list[Pod] | None = None) -> None:
    """Every sent message has exactly one decision on the output topics (read_committed)."""
    topics = cluster.settings.topics
    reader = kafka_clients.consumer(cluster.broker.bootstrap, None, topics.accepted,
                                    topics.rejected, topics.dlq, group_id=None,
                                    auto_offset_reset="earliest", consumer_timeout_ms=500)
    counts: Counter[str] = Counter()
    wanted = set(sent)

    def all_decided() -> bool:
        for batch in reader.poll(timeout_ms=500).values():
            for record in batch:
                counts[json.loads(record.value).get("message_id")] += 1
        return wanted <= counts.keys()

    try:
        wait(all_decided, timeout, f"decisions for all {len(wanted):,} messages sent",
             lambda: next((p.problem() for p in running or cluster.pods if p.problem()), None))
        # And nothing after them: a duplicate would come as a later record.
        for _ in range(4):
            all_decided()
    finally:
        reader.close()
    twice = [m for m in wanted if counts[m] > 1]
    assert not twice, f"{len(twice)} messages decided more than once, e.g. {twice[:3]}"


def test_a_rolling_restart_moves_no_partition_and_restores_only_the_tail(
        cluster: Cluster) -> None:
    assert cluster.users, "runs after test_every_pod_answers_for_every_recipient"
    figures = []
    with Stream(cluster) as stream:
        wait(lambda: len(stream.sent) >= 300, 60, "300 messages sent before the roll")
        for pod in reversed(cluster.pods):  # a StatefulSet rolls the highest ordinal first
            others = [p for p in cluster.pods if p is not pod]
            moves_before = {p.spec.name: len(list(p.log_events("route_assignment")))
                            for p in others}
            owned = pod.owned()
            restores_before = len(list(pod.log_events("restore")))
            stopped_at = time.monotonic()
            assert pod.stop() == 0, f"{pod.spec.name} did not stop cleanly: {pod.log_path}"
            pod.start()
            wait(lambda pod=pod: cluster.ready(pod), 120,  # type: ignore[misc]
                 f"{pod.spec.name} ready again", cluster.problem)
            not_deciding = time.monotonic() - stopped_at
            restores = list(pod.log_events("restore"))[restores_before:]
            figures.append({
                "pod": pod.spec.name, "seconds_not_deciding": round(not_deciding, 1),
                "records_restored": sum(r["to"] - r["from"] for r in restores),
                "restored_from_zero": sum(1 for r in restores if r["from"] == 0)})
            assert pod.owned() == owned, f"{pod.spec.name} came back to other partitions"
            moves_after = {p.spec.name: len(list(p.log_events("route_assignment")))
                           for p in others}
            assert moves_after == moves_before, \
                f"restarting {pod.spec.name} rebalanced the route group"
            assert not any(r["from"] == 0 for r in restores), \
                f"{pod.spec.name} restored a partition from scratch: {restores}"
        sent_during_roll = len(stream.sent)
    print(f"\nrolling restart of {PODS} pods, {sent_during_roll:,} messages sent: "
          f"{json.dumps(figures)}")
    decided_once(cluster, stream.sent, 120)


def test_a_pod_killed_mid_stream_is_replaced_and_every_message_decided_once(
        cluster: Cluster) -> None:
    assert cluster.users, "runs after test_every_pod_answers_for_every_recipient"
    victim = cluster.pods[1]
    survivors = [p for p in cluster.pods if p is not victim]
    lost = victim.owned()
    with Stream(cluster) as stream:
        wait(lambda: len(stream.sent) >= 200, 60, "200 messages sent before the kill")
        victim.signal(signal.SIGKILL)
        assert victim.process is not None
        victim.process.wait(timeout=30)
        # Its partitions wait out the session timeout, then the others take them.
        taken = wait(lambda: set().union(*(p.owned() for p in survivors)) ==
                     set(range(cluster.settings.partitions)),
                     cluster.settings.session_timeout_seconds + 90,
                     f"the survivors to take {victim.spec.name}'s partitions {sorted(lost)}",
                     lambda: next((p.problem() for p in survivors if p.problem()), None))
        at_takeover = len(stream.sent)
        wait(lambda: len(stream.sent) >= at_takeover + 100, 30,
             "100 more messages after the takeover")
    print(f"\n{victim.spec.name} SIGKILLed: its partitions {sorted(lost)} moved after "
          f"{taken:.1f} s (session timeout {cluster.settings.session_timeout_seconds} s); "
          f"{len(stream.sent):,} messages sent")
    decided_once(cluster, stream.sent, 120, survivors)
    # It comes back on its volume and gets a share again.
    victim.start()
    wait(lambda: cluster.ready(victim), 180, f"{victim.spec.name} ready again",
         cluster.problem)
    wait(lambda: bool(victim.owned()) and cluster.all_owned(), 120,
         "the partitions spread over three pods again", cluster.problem)
    for pod in cluster.pods:
        assert pod.stop() == 0, f"{pod.spec.name} did not stop cleanly: {pod.log_path}"


def test_the_harness_reads_the_pod_env_from_the_manifests(tmp_path: Path) -> None:
    """pod_env builds what the kubelet would: ConfigMap, Downward API, $(VAR), Secret, volume."""
    spec = PodSpec("outbound-gate-7", "198.18.0.9", tmp_path / "data",
                   {(next(iter(generated_secrets())), "OUTBOUND_GATE_API_TOKEN"): "s3cret"})
    env = pod_env(spec, {"KAFKA_BOOTSTRAP_SERVERS": "198.18.0.2:9092"})
    settings = from_env(env)
    assert settings.advertised_url == f"http://198.18.0.9:{settings.web_port}"
    assert settings.instance_id == "outbound-gate-7"
    assert settings.api_token == "s3cret"
    assert settings.data_dir == str(tmp_path / "data")
    assert settings.web_host == "0.0.0.0"
    assert settings.bootstrap_servers == "198.18.0.2:9092"
    with pytest.raises(AssertionError, match="do not set"):
        pod_env(spec, {"OUTBOUND_GATE_NOT_A_SETTING": "1"})
