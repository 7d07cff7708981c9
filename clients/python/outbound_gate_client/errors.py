"""The client's errors."""

from __future__ import annotations


class GateClientError(Exception):
    """Base of the client's errors."""


class InvalidMessage(GateClientError):
    """The message breaks the outbound-message contract; the text says where."""


class InvalidRecipient(GateClientError):
    """The recipient is neither a valid phone number nor a valid business-scoped user ID (the
    gate would reject it)."""


class PublishError(GateClientError):
    """Kafka did not take the record."""


class CheckRefused(GateClientError):
    """The check API refused the request (401, 400, 413): fix it, do not retry. `type` is the
    problem's stable type (urn:outbound-gate:problem:...), `reason` its detail."""

    def __init__(self, status: int, reason: str, type: str | None = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.type = type


class CheckUnavailable(GateClientError):
    """No answer now (503: partitions moving, owner restoring): ask again after retry_after."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"{reason} (retry after {retry_after:g} s)")
        self.retry_after = retry_after


class GateUnreachable(GateClientError):
    """No HTTP answer at all: the connection was refused or timed out (the gate's URL, the
    network, or a worker that is down)."""
