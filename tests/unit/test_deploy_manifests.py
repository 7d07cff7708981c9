"""deploy/: the Dockerfile, the compose stack and the Kubernetes manifests agree with the code.

Nothing here runs Docker or Kubernetes. The files are parsed (PyYAML) and compared with the code:
processors.settings for variable names, defaults, ports, topics and consumer groups, and
processors.runtime.views for the paths the worker serves. Every Kubernetes object is validated
offline against its schema: the built-in kinds against the Kubernetes OpenAPI schemas that the
kubernetes-validate package ships, the custom resources (KEDA, Prometheus Operator) against the
openAPIV3Schema of their projects' CRDs, which deploy/k8s/crd_schemas.py extracts into .local/
from pinned Go modules (`make unit` and `make test` run it first).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor
from referencing import Registry, Resource

from processors.runtime.kafka_clients import WILDCARDS
from processors.runtime.views import HEALTH_PATH, METRICS_PATH, READY_PATH
from processors.settings import ENV_HELP, Settings, from_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
OPERATIONS = ROOT / "docs" / "operations.md"

DEFAULTS = Settings()

# The oldest Kubernetes in which every field the manifests use is on by default (the
# StatefulSet's persistentVolumeClaimRetentionPolicy and the PDB's unhealthyPodEvictionPolicy
# went beta, enabled, in 1.27), and the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.27", major_minor(latest_version()))

YAML_FILES = sorted(
    path
    for directory in (COMPOSE_DIR, K8S_DIR)
    for path in directory.rglob("*")
    if path.suffix in {".yaml", ".yml"}
)


def deploy_script(path: Path) -> ModuleType:
    """A Python script of deploy/ (not a package) loaded as a module."""
    name = f"deploy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    return module


CRD_SCHEMAS = deploy_script(K8S_DIR / "crd_schemas.py")
GENERATE_MONITORING = deploy_script(K8S_DIR / "generate_monitoring.py")


def variables_read_directly() -> frozenset[str]:
    """Variables the code reads itself rather than through processors.settings:
    os.environ.get("X"), os.getenv("X") and os.environ["X"] anywhere in processors/."""
    found = set()
    for path in (ROOT / "processors").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args:
                name, key = ast.unparse(node.func), node.args[0]
                if name not in ("os.environ.get", "os.getenv"):
                    continue
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            else:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.add(key.value)
    return frozenset(found)


# What a container may set: the settings, and what the code reads directly (the JSON Schema
# directory, read by processors.core.contracts).
KNOWN_ENV = frozenset(ENV_HELP) | variables_read_directly()


# ---- loading -------------------------------------------------------------------------------------


def load_all(path: Path) -> list[Any]:
    documents: Iterator[Any] = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [doc for doc in documents if doc is not None]


def load_one(path: Path) -> Any:
    documents = load_all(path)
    assert len(documents) == 1, f"{path}: expected one YAML document, got {len(documents)}"
    return documents[0]


def kustomization() -> Any:
    return load_one(K8S_DIR / "kustomization.yaml")


def objects() -> list[tuple[str, Any]]:
    """(file, object) for every object `kubectl apply -k deploy/k8s` applies."""
    return [(name, doc) for name in kustomization()["resources"]
            for doc in load_all(K8S_DIR / name)]


def k8s(kind: str, name: str | None = None) -> Any:
    """The one object of this kind (and name) that kustomization.yaml applies."""
    found = [doc for _, doc in objects() if doc.get("kind") == kind
             and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {K8S_DIR}, found {len(found)}"
    return found[0]


def pod_spec() -> Any:
    return k8s("StatefulSet")["spec"]["template"]["spec"]


def gate_container() -> Any:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "the gate pod has one container"
    return containers[0]


def gate_configmap() -> Any:
    """The ConfigMap the container takes its environment from (there are others)."""
    (name,) = [source["configMapRef"]["name"] for source in gate_container()["envFrom"]
               if "configMapRef" in source]
    return k8s("ConfigMap", name)


def configmap_env() -> dict[str, str]:
    data = gate_configmap()["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def downward_inputs(env: list[Any]) -> set[str]:
    """Variables set from the Downward API only to be used as $(NAME) in another variable's
    value (the pod IP in OUTBOUND_GATE_ADVERTISED_URL): inputs, not settings of the gate."""
    referenced = {name for entry in env for name in REFERENCE.findall(str(entry.get("value", "")))}
    return {entry["name"] for entry in env
            if "fieldRef" in entry.get("valueFrom", {}) and entry["name"] in referenced}


def pod_settings() -> Settings:
    """The settings a pod runs with: the ConfigMap, then the container's own literal values
    (which win, as in Kubernetes); values from the Downward API or a Secret are left out."""
    env = configmap_env()
    env.update({entry["name"]: str(entry["value"]) for entry in gate_container().get("env", [])
                if "value" in entry})
    return from_env(env)


def named_port(container: Any, port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"port {port!r} is not a named container port"
    return int(named[port])


def service_ports(service: Any) -> dict[str, int]:
    """Service port name -> the container port its traffic reaches."""
    return {port["name"]: named_port(gate_container(), port["targetPort"])
            for port in service["spec"]["ports"]}


def compose() -> Any:
    return load_one(COMPOSE_DIR / "compose.yaml")


def compose_service(name: str) -> Any:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


def compose_env(service: Any) -> dict[str, str]:
    """A compose `environment:` as a mapping (it may be a mapping or a list of KEY=VALUE)."""
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return {str(k): "" if v is None else str(v) for k, v in environment.items()}
    pairs = (str(item).partition("=") for item in environment)
    return {name: value for name, _, value in pairs}


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


# ---- schemas -------------------------------------------------------------------------------------


@cache
def kubernetes_definitions(version: str) -> dict[str, Any]:
    """kubernetes-validate's shared definitions (ObjectMeta and the rest) for one version."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    path = folder / f"v{version}.0-local-strict" / "_definitions.json"
    definitions: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return definitions


def strict(schema: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema that also rejects unknown fields.

    The API server prunes unknown fields of a custom resource, and `kubectl apply` (field
    validation strict, its default) refuses the object instead: a misspelt field is an error, not
    a silently missing setting. Objects that keep unknown fields say so
    (x-kubernetes-preserve-unknown-fields) and stay open; `nullable` becomes a null type.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields")
        if "additionalProperties" not in out and not keeps_unknown:
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    for keyword in ("items", "not"):
        if keyword in out:
            out[keyword] = strict(out[keyword])
    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in out:
            out[keyword] = [strict(sub) for sub in out[keyword]]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def custom_resource_validator(api_version: str, kind: str,
                              version: str) -> jsonschema.Draft202012Validator:
    """A validator for a custom resource: its CRD's schema, made strict, with the metadata
    checked as the API server checks every object's (ObjectMeta, which the CRD leaves open)."""
    schema = strict(CRD_SCHEMAS.load(api_version, kind))
    definitions = kubernetes_definitions(version)
    schema["properties"]["metadata"] = {
        "$ref": f"{definitions['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    registry: Registry[Any] = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(document: Any, version: str) -> list[str]:
    """What the schema of the object's kind finds wrong with it; a kind with no schema at all
    is an error too (nothing may go unvalidated)."""
    try:
        kubernetes_validate.validate(document, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        pass  # not a built-in kind: a custom resource
    try:
        validator = custom_resource_validator(document["apiVersion"], document["kind"], version)
    except FileNotFoundError as error:
        return [str(error)]
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(document)]


def file_errors(path: Path, version: str) -> list[str]:
    return [f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: {error}"
            for doc in load_all(path) for error in schema_errors(doc, version)]


# ---- the files are there and parse ---------------------------------------------------------------


def test_the_manifests_are_there() -> None:
    names = {path.name for path in YAML_FILES}
    assert {"compose.yaml", "prometheus.yml", "kustomization.yaml"} <= names
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_to_mappings(path: Path) -> None:
    documents = load_all(path)
    assert documents, f"{path} is empty"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"


def test_kustomization_lists_every_manifest() -> None:
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources))
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == on_disk


# ---- schemas: every object, and proof that a wrong field fails -----------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(kustomization()["resources"]))
def test_every_object_is_valid_against_its_schema(name: str, version: str) -> None:
    assert not file_errors(K8S_DIR / name, version)


def test_every_kind_has_a_schema() -> None:
    """Each object is checked by a real schema: kubernetes-validate's or its CRD's."""
    for _, document in objects():
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            schema = CRD_SCHEMAS.load(document["apiVersion"], document["kind"])
            assert schema["properties"]["spec"], document["kind"]


# (file, text, replacement, what the error names): each a mistake the schema of its kind catches.
BROKEN = [
    ("statefulset.yaml", "livenessProbe:", "livenesProbe:", "livenesProbe"),  # misspelt field
    ("statefulset.yaml", "containerPort: 6067", "containerPort: worker", "'worker'"),
    ("statefulset.yaml", "  replicas: 2", "  replicas: two", "'two'"),
    ("service.yaml", "clusterIP: None", "clusterIp: None", "clusterIp"),
    ("pdb.yaml", "unhealthyPodEvictionPolicy:", "unhealthyPodEvictPolicy:",
     "unhealthyPodEvictPolicy"),
    ("configmap.yaml", 'OUTBOUND_GATE_PARTITIONS: "8"', "OUTBOUND_GATE_PARTITIONS: 8",
     "OUTBOUND_GATE_PARTITIONS"),  # ConfigMap values are strings
    ("grafana-dashboard.yaml", '    grafana_dashboard: "1"', "    grafana_dashboard: 1",
     "grafana_dashboard"),  # so are labels
    ("keda-scaledobject.yaml", "maxReplicaCount: 8", "maxReplicas: 8", "maxReplicas"),
    ("keda-scaledobject.yaml", 'lagThreshold: "1000"', "lagThreshold: 1000", "lagThreshold"),
    ("keda-scaledobject.yaml", "\n  name: outbound-gate\n", "\n  nme: outbound-gate\n", "nme"),
    ("keda-triggerauthentication.yaml", "- parameter: sasl", "- param: sasl", "parameter"),
    ("servicemonitor.yaml", "scrapeTimeout: 10s", "scrapeTimeout: 10 seconds", "10 seconds"),
    ("servicemonitor.yaml", "jobLabel:", "jobLabels:", "jobLabels"),
    ("prometheusrule.yaml", "expr: up{", "expression: up{", "expression"),
]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "text", "replacement", "named"), BROKEN,
                         ids=[f"{n}:{r.strip()}" for n, _, r, _ in BROKEN])
def test_a_broken_copy_fails_validation(tmp_path: Path, name: str, text: str, replacement: str,
                                        named: str, version: str) -> None:
    original = (K8S_DIR / name).read_text(encoding="utf-8")
    assert original.count(text) == 1, f"{name} no longer has {text!r} once: update BROKEN"
    copy_path = tmp_path / name
    copy_path.write_text(original.replace(text, replacement), encoding="utf-8")
    assert not file_errors(K8S_DIR / name, version)
    errors = file_errors(copy_path, version)
    assert errors, f"{name} with {replacement!r} passed validation"
    assert any(named in error for error in errors), errors


def test_strict_leaves_open_what_keeps_unknown_fields() -> None:
    schema = strict({"type": "object", "properties": {
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "open": {"type": "object", "properties": {"a": {"type": "string"}},
                 "x-kubernetes-preserve-unknown-fields": True},
        "maybe": {"type": "string", "nullable": True},
    }})
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"open": {"a": "x", "b": 1}, "maybe": None})
    assert not validator.is_valid({"closed": {"a": "x", "b": 1}})
    assert not validator.is_valid({"other": 1})


# ---- environment variables -----------------------------------------------------------------------


def test_every_variable_of_the_pods_is_a_setting() -> None:
    env = gate_container().get("env", [])
    inputs = downward_inputs(env)
    used = {
        "ConfigMap": set(configmap_env()),
        "StatefulSet env": {entry["name"] for entry in env} - inputs,
    }
    assert all(used.values())
    for where, names in used.items():
        unknown = sorted(names - set(ENV_HELP))
        assert not unknown, f"{where}: variables the worker does not read: {unknown}"
    # An input is there for another variable: nothing refers to a name that is not set.
    defined = set(configmap_env()) | {entry["name"] for entry in env}
    for entry in env:
        undefined = set(REFERENCE.findall(str(entry.get("value", "")))) - defined
        assert not undefined, f"{entry['name']} refers to unset {undefined}"


def test_only_a_referenced_downward_variable_is_an_input() -> None:
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    url = {"name": "OUTBOUND_GATE_ADVERTISED_URL", "value": "http://$(POD_IP):1"}
    node = {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    literal = {"name": "LITERAL", "value": "x"}
    assert downward_inputs([pod_ip, url, node, literal]) == {"POD_IP"}
    assert downward_inputs([pod_ip, literal]) == set()
    assert downward_inputs([{"name": "POD_IP", "value": "1.2.3.4"}, url]) == set()


def test_the_compose_and_docker_variables_are_read() -> None:
    docker_env = {
        name for name in dockerfile_env() if name.startswith(("OUTBOUND_GATE_", "KAFKA_"))
    }
    used = {"compose gate": set(compose_env(compose_service("gate"))),
            "Dockerfile ENV": docker_env}
    assert all(used.values())
    for where, names in used.items():
        unknown = sorted(names - KNOWN_ENV)
        assert not unknown, f"{where}: variables the worker does not read: {unknown}"


@pytest.mark.parametrize("where", ["compose", "configmap", "pod"])
def test_the_gate_settings_are_valid(where: str) -> None:
    # from_env raises SettingsError on a bad value.
    if where == "pod":
        settings = pod_settings()
    else:
        env = compose_env(compose_service("gate")) if where == "compose" else configmap_env()
        assert env["KAFKA_BOOTSTRAP_SERVERS"]
        settings = from_env(env)
    # In a container the HTTP server must listen on every address, not on loopback.
    assert settings.web_host in WILDCARDS
    assert settings.web_port == DEFAULTS.web_port
    assert settings.partitions == DEFAULTS.partitions


def test_the_deployment_reads_the_configmap() -> None:
    assert gate_configmap()["data"]


def commented_settings() -> dict[str, str]:
    """The `# NAME: value` lines of the gate's ConfigMap: settings to uncomment (secure Kafka)."""
    text = (K8S_DIR / "configmap.yaml").read_text(encoding="utf-8")
    return dict(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]*):\s*(\S+)\s*$", text, re.MULTILINE))


def test_the_commented_settings_are_settings_and_their_files_are_mounted() -> None:
    commented = commented_settings()
    assert commented, "configmap.yaml shows the secure-Kafka settings, commented"
    unknown = sorted(set(commented) - set(ENV_HELP))
    assert not unknown, f"commented ConfigMap lines name variables the worker does not read: "\
        f"{unknown}"
    files = {name: PurePosixPath(value) for name, value in commented.items()
             if value.startswith("/")}
    assert files, "the secure-Kafka settings name mounted files"
    mounts = {PurePosixPath(m["mountPath"]): m["name"] for m in gate_container()["volumeMounts"]}
    for name, path in files.items():
        under = [mount for mount in mounts if path.is_relative_to(mount)]
        assert under, f"{name}={path} is under no volume mount of the container"


# ---- Secrets -------------------------------------------------------------------------------------


def referenced_secrets() -> dict[str, set[str]]:
    """Secret name -> the keys the manifests read from it: secretKeyRef, secret volumes (the
    files the commented ConfigMap settings read from them) and KEDA's secretTargetRef."""
    refs: dict[str, set[str]] = {}
    container = gate_container()
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs.setdefault(ref["name"], set()).add(ref["key"])
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            refs.setdefault(source["secretRef"]["name"], set())
    mounts = {m["name"]: PurePosixPath(m["mountPath"]) for m in container["volumeMounts"]}
    files = [PurePosixPath(v) for v in commented_settings().values() if v.startswith("/")]
    for volume in pod_spec().get("volumes", []):
        if "secret" in volume:
            keys = refs.setdefault(volume["secret"]["secretName"], set())
            keys |= {str(path.relative_to(mounts[volume["name"]])) for path in files
                     if path.is_relative_to(mounts[volume["name"]])}
    for entry in k8s("TriggerAuthentication")["spec"].get("secretTargetRef", []):
        refs.setdefault(entry["name"], set()).add(entry["key"])
    return refs


def documented_secrets() -> dict[str, set[str]]:
    """operations.md's table of the Secrets the user creates: name -> keys (in backticks)."""
    lines = OPERATIONS.read_text(encoding="utf-8").splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("| Secret (you create it)")]
    table: dict[str, set[str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        (name,) = re.findall(r"`([^`]+)`", cells[0])
        table[name] = set(re.findall(r"`([^`]+)`", cells[1]))
    return table


def test_every_secret_is_generated_or_documented() -> None:
    referenced = referenced_secrets()
    generated = {entry["name"] for entry in kustomization().get("secretGenerator", [])}
    documented = documented_secrets()
    assert referenced and generated and documented
    # The volume's Secret, the CA's and KEDA's: each found, with the keys read from it.
    assert all(keys for keys in referenced.values())
    missing = sorted(set(referenced) - generated - set(documented))
    assert not missing, f"Secrets neither generated by kustomization.yaml nor in "\
        f"docs/operations.md's table: {missing}"
    stale = sorted(set(documented) - set(referenced))
    assert not stale, f"docs/operations.md lists Secrets no manifest reads: {stale}"
    assert not set(documented) & generated, "a generated Secret is not the user's to create"
    for name, keys in documented.items():
        assert referenced[name] <= keys, f"{name}: keys read {referenced[name]}, "\
            f"documented {keys}"


def test_the_generated_secret_holds_the_api_token() -> None:
    (generator,) = kustomization()["secretGenerator"]
    refs = referenced_secrets()[generator["name"]]
    # Its keys are the env file's names: the variable the pod sets from it is the same.
    env = {entry["name"]: entry["valueFrom"]["secretKeyRef"]["key"]
           for entry in gate_container()["env"]
           if entry.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == generator["name"]}
    assert refs == set(env.values())
    assert all(name == key and name in ENV_HELP for name, key in env.items())


# ---- image ---------------------------------------------------------------------------------------


def test_the_dockerfile_sets_what_a_container_needs() -> None:
    env = dockerfile_env()
    assert env["OUTBOUND_GATE_SCHEMAS_DIR"] == "/app/schemas"
    assert env["OUTBOUND_GATE_WEB_HOST"] in WILDCARDS
    assert env["OUTBOUND_GATE_DATA_DIR"] == configmap_env()["OUTBOUND_GATE_DATA_DIR"]
    instructions = dockerfile_instructions()
    assert ("COPY", "schemas/ /app/schemas/") in instructions
    assert ("ENTRYPOINT", '["outbound-gate"]') in instructions
    assert ("CMD", '["worker"]') in instructions
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"]
    assert "outbound-gate" in scripts


def test_the_state_directory_is_a_volume() -> None:
    data_dir = pod_settings().data_dir
    mounts = {m["name"]: m["mountPath"] for m in gate_container()["volumeMounts"]}
    claims = {claim["metadata"]["name"] for claim in k8s("StatefulSet")["spec"][
        "volumeClaimTemplates"]}
    assert data_dir in {mounts[name] for name in claims}, "the state lives on the pod's claim"
    gate = compose_service("gate")
    targets = {str(v).split(":")[1] for v in gate["volumes"]}
    assert compose_env(gate)["OUTBOUND_GATE_DATA_DIR"] in targets


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
    pod = pod_spec()["securityContext"]
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


def test_container_ports_and_probes() -> None:
    container = gate_container()
    settings = pod_settings()
    # With a port of its own the worker answers the probes itself, so that a query server that
    # restarts does not fail the pod's liveness; 0 would be a loopback port no probe reaches.
    assert settings.worker_port > 0
    assert sorted(p["containerPort"] for p in container["ports"]) == sorted(
        (settings.web_port, settings.worker_port))
    probes = {
        "startupProbe": (HEALTH_PATH, settings.worker_port),
        "livenessProbe": (HEALTH_PATH, settings.worker_port),
        # Through the query server: it answers /readyz with its own readiness and the worker's.
        "readinessProbe": (READY_PATH, settings.web_port),
    }
    for name, (path, port) in probes.items():
        probe = container[name]["httpGet"]
        assert probe["path"] == path, name
        assert named_port(container, probe["port"]) == port, name


def test_the_advertised_url_is_the_pod_ip_and_the_web_port() -> None:
    settings = pod_settings()
    assert settings.advertised_url is not None
    url = urlsplit(settings.advertised_url)
    assert url.port == settings.web_port
    env = {entry["name"]: entry for entry in gate_container()["env"]}
    (host,) = REFERENCE.findall(url.netloc)
    assert env[host]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_graceful_shutdown_outlasts_the_session_timeout() -> None:
    session = pod_settings().session_timeout_seconds
    assert pod_spec()["terminationGracePeriodSeconds"] >= max(60, session)
    assert compose_service("gate")["stop_grace_period"] == "60s"


def test_services_reach_the_web_and_worker_ports() -> None:
    settings = pod_settings()
    statefulset = k8s("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    services = [doc for _, doc in objects() if doc["kind"] == "Service"]
    (headless,) = [s for s in services if s["spec"].get("clusterIP") == "None"]
    (service,) = [s for s in services if s is not headless]
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    for each in services:
        assert each["spec"]["selector"].items() <= pod_labels.items()
    # The check API's Service: the web port, as the port callers use and the one it reaches.
    (port,) = service["spec"]["ports"]
    assert port["port"] == settings.web_port
    assert service_ports(service) == {port["name"]: settings.web_port}
    assert sorted(service_ports(headless).values()) == sorted(
        (settings.web_port, settings.worker_port))
    for each in headless["spec"]["ports"]:
        assert each["port"] == named_port(gate_container(), each["targetPort"])


def test_the_servicemonitor_scrapes_every_pod_on_the_metrics_path() -> None:
    monitor = k8s("ServiceMonitor")
    services = [doc for _, doc in objects() if doc["kind"] == "Service"]
    selected = [s for s in services
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"][
                    "labels"].items()]
    # Only the headless Service: it keeps unready pods, whose metrics matter most.
    (pods,) = selected
    assert pods["spec"]["clusterIP"] == "None" and pods["spec"]["publishNotReadyAddresses"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert service_ports(pods)[endpoint["port"]] == pod_settings().web_port
    assert endpoint["path"] == METRICS_PATH


def test_the_alert_rules_select_the_scrape_job() -> None:
    """The rules say job="..."; the ServiceMonitor's job is its Service's jobLabel label, and
    compose's Prometheus names its job: all the same."""
    monitor = k8s("ServiceMonitor")
    (pods,) = [doc for _, doc in objects() if doc["kind"] == "Service"
               and doc["spec"].get("clusterIP") == "None"]
    job = pods["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    rules = k8s("PrometheusRule")["spec"]["groups"]
    jobs = {found for group in rules for rule in group["rules"]
            for found in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert jobs == {job}
    config = load_one(COMPOSE_DIR / "prometheus.yml")
    assert job in {j["job_name"] for j in config["scrape_configs"]}


def test_prometheus_annotations() -> None:
    annotations = k8s("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert annotations["prometheus.io/port"] == str(pod_settings().web_port)


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


# ---- alert rules and dashboard for the Prometheus Operator and kube-prometheus-stack ------------


def test_the_prometheusrule_and_dashboard_configmap_are_what_the_generator_writes() -> None:
    for path, text in GENERATE_MONITORING.outputs().items():
        assert path.read_text(encoding="utf-8") == text, \
            f"{path.name} is stale: run python deploy/k8s/generate_monitoring.py"


def test_the_prometheusrule_carries_the_rules_file() -> None:
    rules = load_one(GENERATE_MONITORING.RULES)
    assert rules["groups"] and k8s("PrometheusRule")["spec"] == rules


def test_the_dashboard_configmap_carries_the_dashboard() -> None:
    (configmap,) = [doc for _, doc in objects() if doc["kind"] == "ConfigMap"
                    and doc["metadata"]["labels"].get("grafana_dashboard") == "1"]
    data = configmap["data"]
    assert list(data) == [GENERATE_MONITORING.DASHBOARD.name]
    dashboard = GENERATE_MONITORING.DASHBOARD.read_text(encoding="utf-8")
    assert json.loads(data[GENERATE_MONITORING.DASHBOARD.name]) == json.loads(dashboard)
    assert configmap is not gate_configmap()


# ---- PDB and autoscaling -------------------------------------------------------------------------


def test_pdb_selects_the_workers() -> None:
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = k8s("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_keda_scales_the_route_group_up_to_the_partition_count() -> None:
    scaled = k8s("ScaledObject")
    spec = scaled["spec"]
    statefulset = k8s("StatefulSet")
    assert spec["scaleTargetRef"]["name"] == statefulset["metadata"]["name"]
    assert spec["scaleTargetRef"]["kind"] == statefulset["kind"]
    assert spec["minReplicaCount"] == 1
    settings = pod_settings()
    # More workers than partitions get no partition: the partition count is the ceiling.
    assert spec["maxReplicaCount"] == settings.partitions
    assert spec["minReplicaCount"] <= statefulset["spec"]["replicas"] <= spec["maxReplicaCount"]

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["bootstrapServers"] == settings.bootstrap_servers
    # The group that reads the input topic, whose lag is the backlog; Faust's never reads it.
    assert metadata["consumerGroup"] == settings.route_group != settings.faust_group
    assert metadata["topic"] == settings.topics.outbound
    assert int(metadata["lagThreshold"]) > 0


def test_the_scaledobject_names_the_triggerauthentication() -> None:
    # authenticationRef is commented out for a plaintext cluster: the name in the comment.
    text = (K8S_DIR / "keda-scaledobject.yaml").read_text(encoding="utf-8")
    named = re.findall(r"#\s*authenticationRef:\s*\n\s*#\s*name:\s*(\S+)", text)
    assert named == [k8s("TriggerAuthentication")["metadata"]["name"]]


def test_a_copy_with_a_wrong_object_fails(tmp_path: Path) -> None:
    """file_errors sees every document of a file, not only the first."""
    service = (K8S_DIR / "service.yaml").read_text(encoding="utf-8")
    broken = copy.deepcopy(load_all(K8S_DIR / "service.yaml"))
    broken[-1]["spec"]["ports"][0]["port"] = "six"
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump_all(broken), encoding="utf-8")
    assert service.count("---") == 1 and len(broken) == 2
    (error,) = file_errors(path, KUBERNETES_VERSIONS[-1])
    assert "outbound-gate-pods" in error and "six" in error
