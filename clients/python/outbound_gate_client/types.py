"""The check API's answers, typed as schemas/openapi.json describes them (components.schemas):
a test of the repository (tests/unit/test_client_openapi.py) fails when these disagree with
the document, field by field. No `from __future__ import annotations`: TypedDict reads
NotRequired from evaluated annotations."""

from typing import Any, Literal, NotRequired, TypedDict

# operationId -> (method, path template): the calls the client makes.
OPERATIONS: dict[str, tuple[str, str]] = {
    "checkMessages": ("POST", "/v1/check"),
    "getRecipient": ("GET", "/v1/recipients/{tenant}/{identity}"),
    "getOpenApiDocument": ("GET", "/v1/openapi.json"),
}

# The stable `type` of each error the API answers with (Problem.type).
PROBLEM_TYPES = frozenset(f"urn:outbound-gate:problem:{kind}" for kind in (
    "unauthorized", "invalid-request", "unknown-tenant", "invalid-identity", "too-large",
    "unavailable"))


class CheckAnswer(TypedDict):
    """The record the gate would publish now, with decision and preview."""

    schema_version: Literal[1]
    message_id: str
    tenant_id: str
    decision: Literal["accepted", "rejected"]
    preview: Literal[True]
    enrichment: dict[str, Any]
    decided_at: str
    already_decided: NotRequired[Literal[True]]
    error_code: NotRequired[str]
    meta_error_code: NotRequired[int | None]
    reason: NotRequired[str]
    retryable: NotRequired[bool]
    retry_after: NotRequired[str | None]
    violations: NotRequired[list[str]]
    policy: NotRequired[dict[str, Any]]
    message: NotRequired[dict[str, Any]]


class Problem(TypedDict):
    """An error (RFC 9457 problem details)."""

    type: str
    title: str
    status: int
    detail: str


class Unavailable(Problem):
    """No answer now: in a batch, the answer for a message that could not be answered."""

    retry_after_seconds: float


class Batch(TypedDict):
    results: list[CheckAnswer | Unavailable]


class Recipient(TypedDict):
    """What the gate knows of one user now, over every linked identity."""

    tenant_id: str
    identity: str
    user: str
    linked: list[Any]
    as_of: str
    service_window: dict[str, Any]
    marketing: dict[str, Any]
    cooldown_until: str | None
    # Until when a 130472 (the user is in one of Meta's marketing experiments) holds
    # marketing back.
    marketing_experiment_until: NotRequired[str | None]
    pair_rate: list[Any]
    last_decisions: list[Any]
