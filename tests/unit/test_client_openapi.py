"""The client (clients/python) and the check API's OpenAPI document (schemas/openapi.json, its
source of truth) agree: operations (method and path), the fields of every answer it types,
the problem types; and the document the workers serve resolves every $ref within itself."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from outbound_gate_client import types as client_types

from processors.core import contracts

DOCUMENT = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "openapi.json")
                      .read_text())
TYPED = {"CheckAnswer": client_types.CheckAnswer, "Recipient": client_types.Recipient,
         "Problem": client_types.Problem, "Unavailable": client_types.Unavailable,
         "Batch": client_types.Batch}


def test_every_operation_of_the_document_is_the_clients() -> None:
    operations = {op["operationId"]: (method.upper(), path)
                  for path, item in DOCUMENT["paths"].items() for method, op in item.items()}
    assert operations == client_types.OPERATIONS


def properties(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(every property, the required ones) of a component, through allOf and $ref."""
    names, required = set(schema.get("properties", {})), set(schema.get("required", []))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            part = DOCUMENT["components"]["schemas"][part["$ref"].rsplit("/", 1)[1]]
        more, more_required = properties(part)
        names |= more
        required |= more_required
    return names, required


@pytest.mark.parametrize("name", sorted(TYPED))
def test_the_clients_types_have_the_documents_fields(name: str) -> None:
    typed = TYPED[name]
    names, required = properties(DOCUMENT["components"]["schemas"][name])
    hints = typing.get_type_hints(typed)
    assert set(hints) == names, f"{name}: client {sorted(hints)} != document {sorted(names)}"
    assert typed.__required_keys__ == frozenset(required), name  # type: ignore[attr-defined]


def test_every_error_is_a_problem_of_a_type_the_client_knows() -> None:
    problem = DOCUMENT["components"]["schemas"]["Problem"]
    assert set(problem["properties"]["type"]["enum"]) == client_types.PROBLEM_TYPES
    errors = 0
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    continue
                content = response["content"]
                assert set(content) == {"application/problem+json"}, (path, method, status)
                errors += 1
    assert errors > 0, "no error response in the document: the loop above checked nothing"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_the_served_document_resolves_every_ref_within_itself() -> None:
    served = contracts.openapi_document()
    found = refs(served)
    assert found and all(ref.startswith("#/") for ref in found), found
    for ref in found:
        node: Any = served
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref
    # The request body is the outbound-message contract itself.
    assert served["components"]["schemas"]["OutboundMessage"]["required"] == \
        contracts.schema("outbound_message")["required"]
