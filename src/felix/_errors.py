"""One error family for everything a Felix user can get wrong or run into.

Each class carries the HTTP status (``http_status``), the contract's error code
(``code``) and, where a WebSocket can end for that reason, the close code
(``close_code``), so the web layer translates errors by looking them up rather
than by a chain of ``isinstance`` checks — the way h11 attaches
``error_status_hint`` to its protocol errors.
"""

from __future__ import annotations

import reprlib
from typing import Any, ClassVar, Final

__all__ = [
    "QUOTE_LIMIT",
    "AuthenticationError",
    "BadRequest",
    "CapacityError",
    "EventTooLarge",
    "FelixError",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InvalidEvent",
    "OriginNotAllowed",
    "RateLimited",
    "ShuttingDown",
    "WorkflowConflict",
    "WorkflowExists",
    "WorkflowNotFound",
    "cut",
    "quote",
]

#: Characters of client input an error message repeats at most; the rest is
#: cut and marked with "…", so a 1 MB field name never comes back whole.
QUOTE_LIMIT: Final = 80
ELLIPSIS: Final = "\u2026"

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = _repr.maxother = _repr.maxlong = QUOTE_LIMIT
_repr.maxdict = _repr.maxlist = _repr.maxtuple = 4


def cut(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as a message may show it: at most ``limit`` characters, then "…"."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` quoted (``repr``) for an error message, about ``limit`` characters at most.

    Never costs more than the part it shows: a long string is cut before it is
    quoted, a container is summarised (:mod:`reprlib`), and an integer too
    large to print (Python refuses past 4300 digits) is described instead.
    """
    if isinstance(value, str):
        text = repr(value[:limit])
        if len(value) > limit:
            text = text[:-1] + ELLIPSIS + text[-1]
        return text
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = _repr.repr(value)
    except ValueError:  # an integer nested in a container, too large to print
        text = f"a {type(value).__name__}"
    return cut(text, limit)


class FelixError(Exception):
    """Base of every error Felix raises on purpose.

    ``message`` is meant for humans and is safe to show to clients: it never
    contains a credential. ``details`` holds extra JSON fields for the error
    body (for example the ``index`` of the first bad event of a batch).
    """

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The contract's error body: ``{"error", "message"}`` plus any details."""
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(FelixError):
    """A request or query parameter that cannot be understood (400)."""

    http_status = 400
    code = "bad_request"


class AuthenticationError(FelixError):
    """Missing or wrong credentials (401). Never says which of the two."""

    http_status = 401
    code = "unauthorized"


class OriginNotAllowed(FelixError):
    """A browser handshake from an origin that is not allowed (403)."""

    http_status = 403
    code = "origin_not_allowed"


class WorkflowNotFound(FelixError):
    """No such workflow, or it has passed its retention period (404)."""

    http_status = 404
    code = "workflow_not_found"


class WorkflowExists(FelixError):
    """``create_workflow`` with an id that is already taken (409)."""

    http_status = 409
    code = "workflow_exists"


class WorkflowConflict(FelixError):
    """The workflow's state forbids the request: it is terminal, or the
    status transition is not allowed (409)."""

    http_status = 409
    code = "workflow_conflict"


class EventTooLarge(FelixError):
    """An event, batch or request body over its configured limit (413)."""

    http_status = 413
    code = "too_large"


class InvalidEvent(FelixError):
    """An event or request body that breaks the contract (422).

    The message names the field and the rule it broke.
    """

    http_status = 422
    code = "invalid"


class RateLimited(FelixError):
    """Over a configured rate limit (429); ``retry_after`` says in how many
    whole seconds (at least 1) the client may try again."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = max(1, retry_after)


class CapacityError(FelixError):
    """A configured limit on workflows or connections is reached (503)."""

    http_status = 503
    code = "over_capacity"


class ShuttingDown(FelixError):
    """The server is shutting down and takes no new work (503)."""

    http_status = 503
    code = "shutting_down"


class BrokerUnavailable(FelixError):
    """The shared broker (Redis) cannot be reached or did not answer in time (503).

    Nothing was acknowledged: a producer may retry after ``retry_after`` seconds.
    """

    http_status = 503
    code = "broker_unavailable"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = 1


class IdempotencyKeyReused(InvalidEvent):
    """An ``Idempotency-Key`` already applied to the workflow, sent with another body (422)."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(WorkflowConflict):
    """A publish with this ``Idempotency-Key`` is still being applied (409); retry later."""

    code = "idempotency_in_progress"
