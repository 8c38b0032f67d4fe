"""The one ``authenticate``: which credential opens a request, for every route.

:func:`authenticate` reads a route's policy (:class:`~felix.web.edge.routes.Credential`)
and what the request presents — the API key in a header (or the query, where
the route takes query credentials), a subscribe token, the dashboard's
session cookie — and either names the credential (for per-credential rate
limits) or raises :class:`~felix._errors.AuthenticationError` (401). The edge
calls it for every request before anything else is looked at, whether Quart
or one of the edge's own handlers serves the route.

Every configured key is compared, in constant time, whatever the input, so a
wrong key and a missing key take the same path and the same time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from felix._errors import AuthenticationError
from felix.settings import Settings
from felix.web.edge.params import Query
from felix.web.edge.routes import Credential, Route
from felix.web.edge.session import session_credential
from felix.web.edge.tokens import TokenSigner

__all__ = ["Request", "authenticate", "check_api_key", "key_from_headers"]

_INVALID_TOKEN: Final = "invalid or expired token"


@attrs.frozen
class Request:
    """What authentication looks at in a request's head, framework-free."""

    method: str
    path: str
    headers: Sequence[tuple[bytes, bytes]]
    query: Query
    #: The route's path parameters (``workflow_id`` for a token's check).
    params: Mapping[str, str]
    websocket: bool = False


def authenticate(
    route: Route, request: Request, *, settings: Settings, signer: TokenSigner
) -> str | None:
    """The credential ``request`` opens ``route`` with, as a rate-limit name.

    ``k:<index>`` for an API key, ``t:<digest>`` for a subscribe token,
    ``s:<digest>`` for a dashboard session; None for an open route or in
    development mode. Raises :class:`AuthenticationError` (401) otherwise. A
    request that presents a token (where the route reads query credentials)
    is judged by the token alone, in development mode too: it opens only its
    own workflow's route. Never raises anything else.
    """
    if route.opens == Credential.OPEN:
        return None
    if route.query_credentials:
        token = request.query.first("token")
        if token is not None:
            return _token(route, request, token, signer)
    presented = key_from_headers(request.headers)
    if presented is None and route.query_credentials:
        presented = request.query.first("api_key")
    if presented is None and Credential.SESSION in route.opens:
        session = session_credential(
            settings,
            method=request.method,
            headers=request.headers,
            websocket=request.websocket,
            stream=route.stream,
        )
        if session is not None:
            return session
    if Credential.API_KEY not in route.opens:
        raise AuthenticationError("missing or invalid credentials")
    index = check_api_key(settings.api_keys, presented)
    return None if index is None else f"k:{index}"


def _token(route: Route, request: Request, token: str, signer: TokenSigner) -> str:
    grant = signer.verify(token, now=time.time())
    # The same answer as for a forged token: a token opens nothing but its own workflow.
    if (
        Credential.TOKEN not in route.opens
        or request.params.get("workflow_id") != grant.workflow_id
    ):
        raise AuthenticationError(_INVALID_TOKEN)
    return f"t:{grant.token_id}"


def key_from_headers(
    headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]],
) -> str | None:
    """The key from ``Authorization: Bearer K`` or ``X-API-Key: K``, if any.

    Takes ASGI's raw ``(bytes, bytes)`` pairs or a framework's ``(str, str)``.
    """
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        lowered = name.lower()
        if lowered == "x-api-key":
            return value.strip()
        if lowered == "authorization":
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


def check_api_key(keys: tuple[str, ...], presented: str | None) -> int | None:
    """Raise :class:`AuthenticationError` unless ``presented`` is one of ``keys``.

    Returns the index of the matching key (a name for it that is not the
    key, for per-key rate limits), or None in development mode (no keys
    configured), where everything passes.
    """
    if not keys:
        return None
    # Digests of equal length, so that not even the key's length shows in the
    # time compare_digest takes.
    candidate = _digest(presented or "")
    matched: int | None = None
    for index, key in enumerate(keys):
        # No short-circuit: every key is compared whatever matched before.
        if hmac.compare_digest(candidate, _digest(key)) and matched is None:
            matched = index
    if matched is None or presented is None:
        raise AuthenticationError("missing or invalid API key")
    return matched


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
