"""What the edge reads from a URL: the query string, integer parameters, workflow ids.

Each check exists once here and is used by every route, whoever serves it:

- :func:`parse_query` never raises, so that credentials in the query can be
  read before anything is refused; :meth:`Query.strict` then refuses a query
  that is undecodable, has more than :data:`MAX_QUERY_PARAMS` parameters or
  names one twice — as a query problem (400), never as a wrong key.
- :func:`query_int` bounds the digits before calling ``int()``, so a
  4,300-digit ``?after=`` is a clear 422 (REST) or 400 (handshake), not a 500.
- :func:`check_workflow_id` says that an id breaking the id rule is not a
  valid id, instead of that a workflow of that name was not found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import attrs

from felix._core.events import TYPE_NAME
from felix._errors import BadRequest, FelixError, WorkflowNotFound
from felix._runtime.hub import WORKFLOW_ID
from felix.web.edge.errors import quote

__all__ = [
    "MAX_INT_DIGITS",
    "MAX_QUERY_PARAMS",
    "Query",
    "check_workflow_id",
    "parse_query",
    "parse_types",
    "query_int",
    "remote_of",
]

#: Most query parameters a request may carry (every route needs far fewer).
MAX_QUERY_PARAMS: Final = 32
#: Most digits an integer parameter may have: past any real seq, limit or offset,
#: and within a signed 64-bit integer.
MAX_INT_DIGITS: Final = 18


@attrs.frozen
class Query:
    """A parsed query string: its pairs in order, and why it is unusable, if it is."""

    pairs: tuple[tuple[str, str], ...]
    problem: str | None = None

    def first(self, name: str) -> str | None:
        """The first value of ``name``, whatever is wrong with the rest (never raises)."""
        return next((value for key, value in self.pairs if key == name), None)

    def strict(self) -> dict[str, str]:
        """The parameters by name; :class:`BadRequest` (400) for a query that cannot be used."""
        if self.problem is not None:
            raise BadRequest(self.problem)
        if len(self.pairs) > MAX_QUERY_PARAMS:
            raise BadRequest(
                f"the query has {len(self.pairs)} parameters; at most {MAX_QUERY_PARAMS} are read"
            )
        query: dict[str, str] = {}
        for name, value in self.pairs:
            if name in query:
                raise BadRequest(f"query parameter {quote(name)} is given more than once")
            query[name] = value
        return query


def parse_query(raw: bytes) -> Query:
    """Parse an ASGI ``query_string`` leniently: every pair, and any problem for later.

    The string is bounded by the server's request-head limit, so reading
    every pair is bounded work.
    """
    problem = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, problem = raw.decode("latin-1"), "the query string is not UTF-8"
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        pairs = parse_qsl(text, keep_blank_values=True, errors="replace")
        problem = problem or "the query string cannot be parsed (bad percent-encoding)"
    return Query(tuple(pairs), problem)


def query_int(
    query: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    error: type[FelixError],
) -> int:
    """Integer parameter ``name`` of ``query`` (``default`` when absent or empty).

    Raises ``error`` — :class:`~felix._errors.InvalidEvent` (422) on REST,
    :class:`~felix._errors.BadRequest` (400) at a handshake — naming the
    parameter, for anything but digits, more than :data:`MAX_INT_DIGITS`
    digits (``int()`` never sees them), or a value outside ``minimum``..``maximum``.
    """
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise error(f"query parameter {name!r} must be a non-negative integer, got {quote(raw)}")
    if len(raw.lstrip("0")) > MAX_INT_DIGITS:
        raise error(
            f"query parameter {name!r} has {len(raw)} digits; at most {MAX_INT_DIGITS} are read"
        )
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise error(f"query parameter {name!r} must be {bound}, got {value}")
    return value


def parse_types(query: Mapping[str, str]) -> frozenset[str] | None:
    """The ``types=`` filter: a comma-separated list of event type names (400 otherwise)."""
    raw = query.get("types")
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",")]
    if not all(TYPE_NAME.fullmatch(name) for name in names):
        raise BadRequest(
            f"types must be a comma-separated list of event type names, got {quote(raw)}"
        )
    return frozenset(names)


def check_workflow_id(workflow_id: str) -> str:
    """``workflow_id`` if it follows the id rule; else 404 saying it is not a valid id.

    A path names a resource, so an id that cannot exist is a 404 (the
    contract: "404 in a path"); its message says why.
    """
    if not WORKFLOW_ID.fullmatch(workflow_id):
        raise WorkflowNotFound(
            f"{quote(workflow_id)} is not a valid workflow id (1 to 64 of A-Z, a-z, 0-9, _ and -)"
        )
    return workflow_id


def remote_of(scope: Mapping[str, Any]) -> str | None:
    """The client's ``host:port`` from an ASGI scope, for connection listings; None if unknown."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None
