"""deploy/: the Dockerfile, the compose stack and the Kubernetes manifests agree with the code.

Nothing here runs Docker or Kubernetes: the files are parsed (PyYAML) and compared with
processors.settings, the single source of the variable names, defaults and topic names.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.settings import ENV_HELP, Settings, from_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"

# Read by the container but not (or not yet) in ENV_HELP: the schema directory is read by
# processors.core.contracts, the web host is being added to the worker, and the bootstrap
# servers are listed here too so that the check does not depend on how ENV_HELP spells them.
EXTRA_ENV = frozenset({"OUTBOUND_GATE_SCHEMAS_DIR", "OUTBOUND_GATE_WEB_HOST",
                       "KAFKA_BOOTSTRAP_SERVERS"})
ALLOWED_ENV = frozenset(ENV_HELP) | EXTRA_ENV

DEFAULTS = Settings()
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"

YAML_FILES = sorted(
    path
    for directory in (COMPOSE_DIR, K8S_DIR)
    for path in directory.rglob("*")
    if path.suffix in {".yaml", ".yml"}
)
K8S_MANIFESTS = {
    "configmap.yaml", "statefulset.yaml", "service.yaml", "pdb.yaml", "servicemonitor.yaml",
    "keda-scaledobject.yaml", "keda-triggerauthentication.yaml",
}
# Not settings: the Downward API's pod IP, which OUTBOUND_GATE_ADVERTISED_URL is built from.
POD_ENV = frozenset({"POD_IP"})


# ---- loading -------------------------------------------------------------------------------------


def load_all(path: Path) -> list[Any]:
    documents: Iterator[Any] = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [doc for doc in documents if doc is not None]


def load_one(path: Path) -> Any:
    documents = load_all(path)
    assert len(documents) == 1, f"{path}: expected one YAML document, got {len(documents)}"
    return documents[0]


def k8s(kind: str) -> Any:
    """The one object of this kind under deploy/k8s/."""
    found = [
        doc
        for path in sorted(K8S_DIR.glob("*.yaml"))
        for doc in load_all(path)
        if isinstance(doc, dict) and doc.get("kind") == kind
    ]
    assert len(found) == 1, f"expected one {kind} in {K8S_DIR}, found {len(found)}"
    return found[0]


def compose() -> Any:
    return load_one(COMPOSE_DIR / "compose.yaml")


def compose_service(name: str) -> Any:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


def gate_container() -> Any:
    containers = k8s("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the gate pod has one container"
    return containers[0]


def compose_env(service: Any) -> dict[str, str]:
    """A compose `environment:` as a mapping (it may be a mapping or a list of KEY=VALUE)."""
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return {str(k): "" if v is None else str(v) for k, v in environment.items()}
    pairs = (str(item).partition("=") for item in environment)
    return {name: value for name, _, value in pairs}


def configmap_env() -> dict[str, str]:
    data = k8s("ConfigMap")["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    lines = [
        line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def dockerfile_documented_tag() -> str:
    text = DOCKERFILE.read_text(encoding="utf-8")
    match = re.search(r"docker build -f deploy/docker/Dockerfile -t (\S+) \.", text)
    assert match, "the Dockerfile documents its build command with a -t tag"
    return match.group(1)


def container_port(mapping: Any) -> int:
    """The container side of a compose `ports:` entry (short or long syntax)."""
    if isinstance(mapping, dict):
        return int(mapping["target"])
    return int(str(mapping).rsplit(":", 1)[-1].split("/", 1)[0])


def probe_port(probe: Any, container: Any) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"probe port {port!r} is not a named container port"
    return int(named[port])


# ---- the files are there and parse ---------------------------------------------------------------


def test_the_manifests_are_there() -> None:
    names = {path.name for path in YAML_FILES}
    assert {"compose.yaml", "prometheus.yml"} <= names
    assert {*K8S_MANIFESTS, "kustomization.yaml"} <= names
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_to_mappings(path: Path) -> None:
    documents = load_all(path)
    assert documents, f"{path} is empty"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_one(K8S_DIR / "kustomization.yaml")
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == on_disk == K8S_MANIFESTS


# ---- environment variables -----------------------------------------------------------------------


def test_every_gate_variable_is_one_the_worker_reads() -> None:
    deployment_env = {entry["name"] for entry in gate_container().get("env", [])} - POD_ENV
    docker_env = {
        name for name in dockerfile_env() if name.startswith(("OUTBOUND_GATE_", "KAFKA_"))
    }
    used = {
        "compose gate": set(compose_env(compose_service("gate"))),
        "ConfigMap": set(configmap_env()),
        "Deployment env": deployment_env,
        "Dockerfile ENV": docker_env,
    }
    assert used["compose gate"] and used["ConfigMap"] and used["Dockerfile ENV"]
    for where, names in used.items():
        unknown = sorted(names - ALLOWED_ENV)
        assert not unknown, f"{where}: variables the worker does not read: {unknown}"


@pytest.mark.parametrize("where", ["compose", "configmap"])
def test_the_gate_settings_are_valid(where: str) -> None:
    env = compose_env(compose_service("gate")) if where == "compose" else configmap_env()
    settings = from_env(env)  # raises SettingsError on a bad value
    assert env["KAFKA_BOOTSTRAP_SERVERS"]
    assert env["OUTBOUND_GATE_WEB_HOST"] == "0.0.0.0"
    assert settings.web_port == DEFAULTS.web_port
    assert settings.partitions == DEFAULTS.partitions


def test_the_deployment_reads_the_configmap() -> None:
    sources = gate_container()["envFrom"]
    assert {"configMapRef": {"name": k8s("ConfigMap")["metadata"]["name"]}} in sources


def test_the_dockerfile_sets_what_a_container_needs() -> None:
    env = dockerfile_env()
    assert env["OUTBOUND_GATE_SCHEMAS_DIR"] == "/app/schemas"
    assert env["OUTBOUND_GATE_WEB_HOST"] == "0.0.0.0"
    assert env["OUTBOUND_GATE_DATA_DIR"] == "/var/lib/outbound-gate"
    instructions = dockerfile_instructions()
    assert ("COPY", "schemas/ /app/schemas/") in instructions
    assert ("ENTRYPOINT", '["outbound-gate"]') in instructions
    assert ("CMD", '["worker"]') in instructions
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"]
    assert "outbound-gate" in scripts


def test_the_state_directory_is_a_volume() -> None:
    data_dir = configmap_env()["OUTBOUND_GATE_DATA_DIR"]
    mounts = {m["mountPath"] for m in gate_container()["volumeMounts"]}
    assert data_dir in mounts
    gate = compose_service("gate")
    targets = {str(v).split(":")[1] for v in gate["volumes"]}
    assert compose_env(gate)["OUTBOUND_GATE_DATA_DIR"] in targets


# ---- image ---------------------------------------------------------------------------------------


def test_one_image_name_everywhere() -> None:
    tag = dockerfile_documented_tag()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"]
    assert tag == f"outbound-gate:{version}"
    assert compose_service("gate")["image"] == tag
    assert gate_container()["image"] == tag


def test_compose_builds_with_the_dockerfile() -> None:
    build = compose_service("gate")["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE


def test_the_image_runs_as_the_user_the_pod_expects() -> None:
    users = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile sets a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric UID lets runAsNonRoot verify it"
    pod = k8s("StatefulSet")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == int(uid)


def test_compose_kafka_is_apache_kafka_4_1() -> None:
    image = compose_service("kafka")["image"]
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", image), image
    env = compose_env(compose_service("gate"))
    kafka_env = compose_env(compose_service("kafka"))
    assert env["KAFKA_BOOTSTRAP_SERVERS"] in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


# ---- ports, probes, metrics ----------------------------------------------------------------------


def test_dockerfile_exposes_the_web_port() -> None:
    exposed = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == [str(DEFAULTS.web_port)]
    healthchecks = [a for k, a in dockerfile_instructions() if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and HEALTH_PATH in healthchecks[0]


def test_container_port_and_probes() -> None:
    container = gate_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    worker_port = from_env(configmap_env()).worker_port
    assert ports == {"http": DEFAULTS.web_port, "worker": worker_port}
    # Liveness asks the worker itself: a query server that restarts does not fail it.
    probes = {
        "startupProbe": (HEALTH_PATH, worker_port),
        "livenessProbe": (HEALTH_PATH, worker_port),
        "readinessProbe": (READY_PATH, DEFAULTS.web_port),
    }
    for name, (path, port) in probes.items():
        probe = container[name]
        assert probe["httpGet"]["path"] == path, name
        assert probe_port(probe, container) == port, name


def test_graceful_shutdown_outlasts_the_session_timeout() -> None:
    pod = k8s("StatefulSet")["spec"]["template"]["spec"]
    session = from_env(configmap_env()).session_timeout_seconds
    assert pod["terminationGracePeriodSeconds"] >= max(60, session)
    assert compose_service("gate")["stop_grace_period"] == "60s"


def test_service_and_servicemonitor() -> None:
    services = {doc["metadata"]["name"]: doc for doc in load_all(K8S_DIR / "service.yaml")}
    service, pods = services["outbound-gate"], services["outbound-gate-pods"]
    assert k8s("StatefulSet")["spec"]["serviceName"] == "outbound-gate-pods"
    assert pods["spec"]["clusterIP"] == "None"
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port["port"] == DEFAULTS.web_port
    assert port["targetPort"] in ("http", DEFAULTS.web_port)
    pod_labels = k8s("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    monitor = k8s("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pods["metadata"][
        "labels"].items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == METRICS_PATH


def test_prometheus_annotations() -> None:
    annotations = k8s("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert annotations["prometheus.io/port"] == str(DEFAULTS.web_port)


def test_compose_ports_and_scrape_target() -> None:
    gate = compose_service("gate")
    assert DEFAULTS.web_port in {container_port(p) for p in gate["ports"]}
    config = load_one(COMPOSE_DIR / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "outbound-gate"]
    assert job.get("metrics_path", METRICS_PATH) == METRICS_PATH
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"gate:{DEFAULTS.web_port}"]
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    mounts = {str(v).split(":")[1] for v in compose_service("prometheus")["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"} <= mounts


# ---- PDB and autoscaling -------------------------------------------------------------------------


def test_pdb_selects_the_workers() -> None:
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = k8s("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_keda_scales_on_the_input_topic_up_to_the_partition_count() -> None:
    scaled = k8s("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    deployment = k8s("StatefulSet")
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["scaleTargetRef"]["kind"] == "StatefulSet"
    assert spec["minReplicaCount"] == 1
    # More workers than partitions get no partition: the partition count is the ceiling.
    assert spec["maxReplicaCount"] == DEFAULTS.partitions
    assert spec["minReplicaCount"] <= deployment["spec"]["replicas"] <= spec["maxReplicaCount"]

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    # KEDA's trigger metadata is a map of strings: a bare 1000 in YAML would be rejected.
    assert all(isinstance(value, str) for value in metadata.values()), metadata
    settings = from_env(configmap_env())
    assert settings.partitions == spec["maxReplicaCount"]
    assert metadata["bootstrapServers"] == settings.bootstrap_servers
    # The group that reads the input topic; Faust's group (the app id) never does.
    assert metadata["consumerGroup"] == settings.route_group == "outbound-gate-route"
    assert metadata["topic"] == settings.topics.outbound == "outbound.messages"
    assert metadata["lagThreshold"] == "1000"

