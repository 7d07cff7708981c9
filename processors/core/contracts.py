"""JSON Schema validators for the wire contracts in schemas/ (DESIGN §3). No Kafka here."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from processors.core.timeutil import is_rfc3339

# Contract name -> schema file. Names double as the envelope "kinds" of the offline check.
SCHEMA_FILES: Mapping[str, str] = {
    "outbound_message": "outbound-message.schema.json",
    "accepted_message": "accepted-message.schema.json",
    "rejection": "rejection.schema.json",
    "dead_letter": "dead-letter.schema.json",
    "enrichment": "enrichment.schema.json",
    "template_entry": "template-catalog-entry.schema.json",
    "delivery_status": "delivery-status.schema.json",
    "inbound_message": "inbound-message.schema.json",
    "user_preference": "user-preference.schema.json",
    "policy": "policy.schema.json",
    "repartition_envelope": "repartition-envelope.schema.json",
}

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _date_time(instance: object) -> bool:
    # A format only constrains strings (JSON Schema 2020-12 §7.1); types are checked elsewhere.
    return not isinstance(instance, str) or is_rfc3339(instance)


def schemas_dir() -> Path:
    """Where the JSON Schemas are read from.

    OUTBOUND_GATE_SCHEMAS_DIR when set; else the copy packaged with `processors` (package data:
    in a checkout processors/schemas is a symlink to the top-level schemas/, which a wheel build
    copies); else schemas/ beside the package (a checkout whose symlink was not kept).
    """
    override = os.environ.get("OUTBOUND_GATE_SCHEMAS_DIR")
    if override:
        return Path(override)
    package = Path(str(resources.files("processors")))
    packaged = package / "schemas"
    return packaged if packaged.is_dir() else package.parent / "schemas"


@cache
def _registry() -> Registry[Any]:
    resources = []
    for filename in SCHEMA_FILES.values():
        document = json.loads((schemas_dir() / filename).read_text(encoding="utf-8"))
        resources.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(resources)


@cache
def schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (schemas_dir() / SCHEMA_FILES[name]).read_text(encoding="utf-8")
    )
    return document


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), registry=_registry(), format_checker=_FORMATS)


@cache
def fast_check(name: str) -> jsonschema_rs.Validator | None:
    """A compiled validator (jsonschema-rs) for schemas that need no cross-file $ref.

    Several times faster than jsonschema on the hot path, and it never writes into the document
    (no defaults filled in: a rejection carries the message as it was sent). jsonschema stays the
    authority: a document the fast check refuses is looked at again by jsonschema, which writes
    the error message (its ECMA-262 patterns may refuse more), and a property test holds that it
    never passes a document jsonschema refuses.
    """
    document = schema(name)
    if "$ref" in json.dumps(document):
        return None
    return jsonschema_rs.validator_for(document, formats={"date-time": is_rfc3339},
                                       validate_formats=True, offline=True)


def first_error(name: str, document: Any) -> str | None:
    """The most relevant validation error as one line, or None when the document is valid."""
    check = fast_check(name)
    if check is not None and check.is_valid(document):
        return None
    errors = sorted(validator(name).iter_errors(document), key=lambda e: e.path)
    if not errors:
        return None
    error = errors[0]
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    message = error.message
    if len(message) > 300:
        message = message[:300] + "..."
    return f"{where}: {message}"


def openapi_document() -> dict[str, Any]:
    """The check API's OpenAPI document as the workers serve it: schemas/openapi.json with the
    schema files it names by file name (outbound-message.schema.json) copied into
    components.schemas, so that every $ref is a pointer into the document itself (a client
    that fetched only /v1/openapi.json resolves them all)."""
    document: dict[str, Any] = json.loads((schemas_dir() / "openapi.json").read_text())
    components = document.setdefault("components", {}).setdefault("schemas", {})

    def bundled(node: Any, base: str) -> Any:
        if isinstance(node, list):
            return [bundled(item, base) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: bundled(value, base) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and base:
            out["$ref"] = base + ref[1:]  # a pointer inside a copied file, now inside this
        elif isinstance(ref, str) and not ref.startswith("#"):
            name = "".join(part.title() for part in
                           ref.removesuffix(".json").removesuffix(".schema").split("-"))
            if name not in components:
                copied = {k: v for k, v in json.loads((schemas_dir() / ref).read_text()).items()
                          if k not in ("$schema", "$id")}
                components[name] = {}  # claimed before the walk: a file that names itself
                components[name] = bundled(copied, f"#/components/schemas/{name}")
            out["$ref"] = f"#/components/schemas/{name}"
        return out

    paths = bundled(document.get("paths", {}), "")
    document["components"]["schemas"] = {**components, **{
        name: bundled(schema_, "") for name, schema_ in list(components.items())}}
    document["paths"] = paths
    return document
