"""The schemas of the custom resources in deploy/k8s, taken from the CRDs their projects publish.

    python deploy/k8s/crd_schemas.py   # fetch once into .local/crd-schemas/ (make unit/test do)

KEDA (ScaledObject, TriggerAuthentication) and the Prometheus Operator (ServiceMonitor,
PrometheusRule) ship their CustomResourceDefinitions inside their Go modules. `go mod download`
fetches each module at the version pinned below through the Go module proxy; its hash must be the
pinned one (what go.sum would hold), and each CRD's openAPIV3Schema is written as JSON, one file
per kind and served version. Nothing of the modules is committed: only these pins.
tests/unit/test_deploy_manifests.py validates the custom resources against the files.

Needs `go` on PATH (deploy/local/install-deps.sh installs Debian's when it is missing): 1.26 or
later, or one older than 1.21 (Debian 12's 1.19 was tried). Go 1.21 to 1.25 refuse the KEDA
module, whose go.mod asks for 1.26, and GOTOOLCHAIN=local stops them from downloading a newer
toolchain of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
OUT = LOCAL / "crd-schemas"
STAMP = OUT / "pins.json"


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    # The module zip's hash as go.sum records it (h1: dirhash); `go mod download` computes it.
    sum: str
    crds: tuple[str, ...]  # files in the module, each one or more CustomResourceDefinitions


# The newest releases the proxy serves that the machine's Go (1.26) can download: KEDA 2.21
# needs Go 1.27.
MODULES = (
    Module("github.com/kedacore/keda/v2", "v2.20.2",
           "h1:SR60v8uIcelbveS8n/1jcl8tLdBBIbHMxmdOHw8tKqA=",
           ("config/crd/bases/keda.sh_scaledobjects.yaml",
            "config/crd/bases/keda.sh_triggerauthentications.yaml")),
    Module("github.com/prometheus-operator/prometheus-operator", "v0.85.0",
           "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=",
           ("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml")),
)


def schema_path(api_version: str, kind: str, out: Path = OUT) -> Path:
    """Where the schema of `kind` at `api_version` (group/version) is written."""
    group, _, version = api_version.rpartition("/")
    return out / f"{kind.lower()}-{group}-{version}.json"


def load(api_version: str, kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of a custom resource, as its CRD declares it."""
    path = schema_path(api_version, kind)
    if not path.is_file():
        known = sorted(p.name for p in OUT.glob("*.json") if p != STAMP) if OUT.is_dir() else []
        raise FileNotFoundError(
            f"no CRD schema for {kind} {api_version} at {path} (have: {known or 'none'}); "
            f"run `make crd-schemas` (python deploy/k8s/crd_schemas.py)")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def pins() -> list[dict[str, Any]]:
    """The pins as the stamp file holds them (JSON: lists, not tuples)."""
    loaded: list[dict[str, Any]] = json.loads(json.dumps([asdict(m) for m in MODULES]))
    return loaded


def download(module: Module) -> Path:
    """The module's directory in .local/go-mod, downloaded by go and checked against the pin."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("crd_schemas.py: needs go on PATH to download "
                         f"{module.path}@{module.version} from the Go module proxy")
    env = {
        **os.environ,
        "GOMODCACHE": str(LOCAL / "go-mod"),
        # Never a toolchain download; writable files so that `make clean` can remove them.
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-modcacherw",
        # The pinned sum below is the check (as go.sum is), so no checksum database is asked.
        "GOSUMDB": "off",
    }
    result = subprocess.run([go, "mod", "download", "-json", f"{module.path}@{module.version}"],
                            cwd=LOCAL, env=env, capture_output=True, text=True, timeout=300)
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {"Error": result.stderr.strip() or f"go exited {result.returncode}"}
    if result.returncode != 0 or info.get("Error"):
        raise SystemExit(f"crd_schemas.py: go mod download {module.path}@{module.version}: "
                         f"{info.get('Error') or result.stderr.strip()}")
    if info["Sum"] != module.sum:
        raise SystemExit(f"crd_schemas.py: {module.path}@{module.version} has hash "
                         f"{info['Sum']}, pinned {module.sum}: not using it")
    return Path(info["Dir"])


def extract(crd_file: Path, out: Path) -> list[Path]:
    """Writes the openAPIV3Schema of each served version of each CRD in `crd_file`."""
    written = []
    for crd in yaml.safe_load_all(crd_file.read_text(encoding="utf-8")):
        if not crd:
            continue
        assert crd["kind"] == "CustomResourceDefinition", f"{crd_file}: {crd['kind']}"
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            path = schema_path(f"{spec['group']}/{version['name']}", spec["names"]["kind"], out)
            path.write_text(json.dumps(version["schema"]["openAPIV3Schema"], indent=1) + "\n",
                            encoding="utf-8")
            written.append(path)
    return written


def fetch() -> list[Path]:
    """Downloads and extracts every pinned CRD, unless the same pins were extracted before."""
    if STAMP.is_file() and json.loads(STAMP.read_text(encoding="utf-8")) == pins():
        return []
    LOCAL.mkdir(exist_ok=True)
    tmp = OUT.with_name(OUT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    written = []
    for module in MODULES:
        directory = download(module)
        for name in module.crds:
            written += extract(directory / name, tmp)
    (tmp / STAMP.name).write_text(json.dumps(pins(), indent=1) + "\n", encoding="utf-8")
    # Whole or not at all: a half-written directory would pass for a fetched one.
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    return [OUT / path.name for path in written]


def main() -> int:
    for path in fetch():
        print(f"crd_schemas.py: wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
