"""Workers as Kubernetes runs them, on one machine: each pod in a Linux network namespace of its
own (its own address, its own loopback, the same port as every other pod), configured from
deploy/k8s itself, with a broker in a namespace of its own.

The namespaces hang off one bridge in the test's namespace, on 198.18.N.0/24 (RFC 2544's
benchmarking range: never a real network's); the test reaches every pod and the broker there,
and nothing leaves the machine. Everything made is removed at the end.

What the kubelet would do and the test does instead:
- envFrom the ConfigMap, then the container's env in order, with $(VAR) references expanded
  and the Downward API's status.podIP and metadata.name filled in;
- secretKeyRef: the kustomize secretGenerator's Secret, with a token the test makes;
- a volume mounted at a path: a directory of the test's (a value under the mount path is
  rewritten to it); the PersistentVolumeClaim outlives the pod, as the directory does.
Only what a cluster's own values replace is overridden, and said: the bootstrap servers and the
replication factor (one broker here; the ConfigMap says to use 1 on such a cluster).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KAFKA_PORT = 9092


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"og-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Network:
    """A bridge, and a namespace per host on it."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: int = field(default_factory=lambda: 1 + secrets.randbelow(250))
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address

    @property
    def bridge(self) -> str:
        return f"ogb{self.tag}"

    def namespace(self, name: str) -> str:
        return f"og-{self.tag}-{name}"

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"198.18.{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> str:
        """A namespace with its own address on the bridge; returns the address."""
        number = len(self.hosts) + 2
        address = f"198.18.{self.subnet}.{number}"
        namespace, outside, inside = self.namespace(name), f"og{self.tag}h{number}", \
            f"og{self.tag}n{number}"
        ip("netns", "add", namespace)
        self.hosts[name] = address
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", namespace)
        ip("-n", namespace, "link", "set", inside, "name", "eth0")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("link", "set", outside, "master", self.bridge)
        ip("link", "set", outside, "up")
        return address

    def exec(self, name: str) -> list[str]:
        """The command prefix that runs a program in host `name`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def down(self) -> None:
        for name in self.hosts:  # a namespace takes its end of the veth pair with it
            subprocess.run(["ip", "netns", "del", self.namespace(name)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.hosts.clear()


class Broker:
    """deploy/local/kafka.sh's single-node Kafka, in a namespace of its own."""

    def __init__(self, network: Network, home: Path) -> None:
        self.network, self.home = network, home
        self.address = network.add_host("kafka")
        self.env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        self.env.update({
            "KAFKA_LOCAL_HOME": str(home), "KAFKA_LOCAL_HOST": self.address,
            # The jars the local broker's set-up fetched (kafka.sh fetches them if missing).
            "KAFKA_LOCAL_LIBS": str(REPO / ".local" / "kafka" / "libs"),
            "PYTHON": sys.executable,
        })

    @property
    def bootstrap(self) -> str:
        return f"{self.address}:{KAFKA_PORT}"

    def up(self) -> None:
        result = subprocess.run([*self.network.exec("kafka"), str(REPO / "deploy/local/kafka.sh"),
                                 "up"], env=self.env, capture_output=True, text=True, timeout=240)
        if result.returncode != 0:
            raise RuntimeError(f"the namespaced broker did not start:\n{result.stderr}")

    def down(self) -> None:
        subprocess.run([str(REPO / "deploy/local/kafka.sh"), "down"], env=self.env,
                       capture_output=True, timeout=120)


# ---- the manifests --------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def generated_secrets() -> set[str]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return {entry["name"] for entry in kustomization.get("secretGenerator", [])}


REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, any other left as is."""
    return REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


@dataclass(frozen=True)
class PodSpec:
    name: str
    ip: str
    volume: Path  # the PersistentVolumeClaim "data"
    secret_values: dict[tuple[str, str], str]  # (Secret name, key) -> value


def pod_env(pod: PodSpec, overrides: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it from deploy/k8s for this pod."""
    statefulset = one("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    configmaps = {doc["metadata"]["name"]: doc["data"] for doc in manifests()
                  if doc["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]].items()})
    fields = {"status.podIP": pod.ip, "metadata.name": pod.name}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(str(entry["value"]), env)
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = pod.secret_values[(ref["name"], ref["key"])]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    for claim in claims:
        for name, value in env.items():
            if value.startswith(mounts[claim]):
                env[name] = str(pod.volume) + value[len(mounts[claim]):]
    unknown = set(overrides) - set(env)
    assert not unknown, f"overrides of variables the manifests do not set: {unknown}"
    return {**env, **overrides}


def container_port(name: str) -> int:
    (container,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def probe(kind: str) -> tuple[str, int]:
    """(path, port) of the container's startupProbe, livenessProbe or readinessProbe."""
    (container,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    get = container[kind]["httpGet"]
    port = get["port"] if isinstance(get["port"], int) else container_port(get["port"])
    return get["path"], port


# ---- pods -----------------------------------------------------------------------------------


@dataclass
class Pod:
    """One worker in its namespace: started, killed, started again on the same volume."""

    spec: PodSpec
    network: Network
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OUTBOUND_GATE_", "KAFKA_"))}
        with open(self.log_path, "ab") as log:  # a restarted pod appends to the same log
            # Its own UTS namespace too: the pod's hostname is its name, as in Kubernetes.
            self.process = subprocess.Popen(
                [*self.network.exec(self.spec.name), "unshare", "--uts", "sh", "-c",
                 'hostname "$0" && exec "$@"', self.spec.name,
                 sys.executable, "-m", "processors.cli.main", "worker"],
                env={**base, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.spec.volume.parent)

    def url(self, port_name: str = "http") -> str:
        return f"http://{self.spec.ip}:{container_port(port_name)}"

    def problem(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            return f"pod {self.spec.name} exited with {self.process.returncode}; " \
                   f"log: {self.log_path}"
        return None

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        # `sh` exec'd the worker, so the process is the worker itself.
        self.process.send_signal(number)

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
                raise
        return self.process.returncode

    def log_events(self, event: str) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry.get("event") == event:
                    yield entry

    def owned(self) -> set[int]:
        """The route partitions of its latest assignment, from its log."""
        latest: set[int] = set()
        for entry in self.log_events("route_assignment"):
            latest = set(entry["partitions"])
        return latest


def wait(condition: Callable[[], bool], timeout: float, what: str,
         alive: Callable[[], str | None] = lambda: None) -> float:
    """Poll until condition() holds; returns the seconds it took, or raises naming what was
    awaited."""
    started = time.monotonic()
    while not condition():
        problem = alive()
        if problem:
            raise AssertionError(f"{problem} while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)  # pacing between polls of a condition with a deadline
    return time.monotonic() - started
