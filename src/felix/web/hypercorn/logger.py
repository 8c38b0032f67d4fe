"""Everything Felix changes in ``hypercorn.logging.Logger``: no key or token in a log line.

Written against Hypercorn 0.18.0. Not installed by rebinding: the config names
it (``config.logger_class = RedactingLogger``), so it applies only where asked.
Not a defect but Felix's policy, so not planned for deletion (upstream main,
0e2311f, builds its atoms from the raw request as 0.18.0 does).

Hypercorn's access-log atoms include the query string (``%(q)s``, ``%(R)s``,
``%(Uq)s``), every request header (``%({authorization}i)s``) and every
environment variable (``%({felix_api_key}e)s``). A format string chosen by an
operator could print any of them, so the atoms themselves are built from a
redacted copy of the request, and the secret environment variables are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode

from hypercorn.logging import Logger

__all__ = ["REDACTED", "RedactingLogger", "redact_query"]

#: The upstream methods this module overrides (the guard test checks them).
OVERRIDES = ("atoms",)

REDACTED: Final = "[redacted]"
SECRET_PARAMETERS: Final = frozenset({"api_key", "token"})
SECRET_HEADERS: Final = frozenset({b"authorization", b"x-api-key", b"cookie"})
SECRET_VARIABLES: Final = ("felix_api_key", "felix_token_secret")


def redact_query(query: bytes) -> bytes:
    """The query string with the values of ``api_key`` and ``token`` replaced."""
    # Look for the names decoded: the server decodes %74oken= to token= too.
    decoded = unquote_to_bytes(query)
    if not any(name.encode() in decoded for name in SECRET_PARAMETERS):
        return query
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode(
        [(name, REDACTED if name in SECRET_PARAMETERS else value) for name, value in pairs],
        safe="[]",
    ).encode("latin-1")


class RedactingLogger(Logger):
    """Hypercorn's logger, fed a request scope with its secrets masked (and ``Set-Cookie``)."""

    def atoms(self, request: Any, response: Any, request_time: float) -> Mapping[str, str]:
        """Access-log atoms built from a redacted copy of the request."""
        safe = dict(request)
        safe["query_string"] = redact_query(request.get("query_string", b""))
        safe["headers"] = [
            (name, REDACTED.encode() if name.lower() in SECRET_HEADERS else value)
            for name, value in request.get("headers", [])
        ]
        atoms = dict(super().atoms(safe, response, request_time))  # type: ignore[arg-type]
        for variable in SECRET_VARIABLES:
            key = f"{{{variable}}}e"
            if key in atoms:
                atoms[key] = REDACTED
        # The dashboard's session cookie is a credential too (felix.web.edge.session).
        if "{set-cookie}o" in atoms:
            atoms["{set-cookie}o"] = REDACTED
        return _Atoms(atoms)


class _Atoms(dict[str, str]):
    # Hypercorn's own atoms answer "-" for a missing header; keep that, and
    # look headers up case-insensitively as it does.
    def __getitem__(self, key: str) -> str:
        try:
            return super().__getitem__(key.lower() if key.startswith("{") else key)
        except KeyError:
            return "-"
