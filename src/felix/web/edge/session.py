"""Dashboard sessions: a signed, expiring cookie that stands in for the API key in a browser.

The dashboard must not keep the API key in the page. The user pastes it once;
``POST /dashboard/session`` checks it and answers with a cookie holding
``base64url(claims + mac)``, where ``claims`` is the ASCII text
``v1|dashboard-session|<expires>`` and ``mac`` the HMAC-SHA256 of the claims
under a secret derived from the key that signed in:
``HMAC-SHA256(key, "felix dashboard-session secret v1")``. The cookie carries no
key, cannot be altered, dies at ``expires`` (:data:`SESSION_TTL` after sign-in),
and stops verifying as soon as the key that made it is removed from
``FELIX_API_KEY``. The derivation label differs from the subscribe tokens', so
neither kind of value can pass for the other.

Which routes the cookie may open is the route table's to say
(:data:`felix.web.edge.routes.ROUTES`, the routes whose policy has
``Credential.SESSION``): what the dashboard needs and nothing else —

- ``GET`` (and ``HEAD``) ``/api/v1/workflows`` and ``/api/v1/workflows/{id}``;
- ``POST /api/v1/workflows/{id}/tokens`` (the page mints a subscribe token per
  connection);
- the system stream ``WS /api/v1/ws/system/events`` (the list's live updates),
  and its Server-Sent Events twin ``GET /api/v1/sse/system/events``.

How a request must look for the cookie to count there (the CSRF rules below)
is decided here and only here, by :func:`session_credential`, which the one
``authenticate`` (:mod:`felix.web.edge.auth`) calls when a request carries no
other credential.

Against cross-site request forgery, on REST the cookie counts only with the
``X-Felix-Dashboard: 1`` header (which a cross-origin page cannot send without
a CORS preflight, and Felix answers none), on a ``POST`` also only with an
``Origin`` naming this server, and on the WebSocket (where browsers cannot add
headers) only with such an ``Origin``; on a Server-Sent Events stream (where
``EventSource`` cannot add headers either, and a same-origin ``GET`` has no
``Origin``) only with ``Sec-Fetch-Site: same-origin`` or such an ``Origin``. A
``Sec-Fetch-Site`` other than
``same-origin`` voids it everywhere. The cookie itself is ``HttpOnly``,
``SameSite=Strict`` and ``Path=/``, and ``Secure`` when the page is served over
HTTPS. A request the cookie does not count for is judged as if it had no
credential: 401 when a key is configured, exactly as before.

Sans-IO: callers pass ``now`` (wall-clock seconds, :func:`time.time`) to the signer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Final

import attrs

from felix._errors import AuthenticationError
from felix.settings import Settings
from felix.web.edge.origins import names_host, parse_origin
from felix.web.edge.signing import derive, open_signed, sign

__all__ = [
    "COOKIE_NAME",
    "DASHBOARD_HEADER",
    "SESSION_TTL",
    "SessionSigner",
    "cookie_value",
    "same_origin",
    "session_credential",
    "signer_for",
]

#: The session cookie's name.
COOKIE_NAME: Final = "felix_session"
#: The header the dashboard sends with every cookie-authenticated REST request.
DASHBOARD_HEADER: Final = "X-Felix-Dashboard"
#: Seconds a session lasts after sign-in: a working day. Signing in again renews it.
SESSION_TTL: Final = 8 * 3600
#: Longest cookie value looked at; real ones are under 80 characters.
MAX_VALUE_LENGTH: Final = 256

_VERSION: Final = "v1"
_SCOPE: Final = "dashboard-session"
_LABEL: Final = b"felix dashboard-session secret v1"
_INVALID: Final = "invalid or expired session"

Headers = Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]


def _derive(key: str) -> bytes:
    return derive(key, _LABEL)


@attrs.frozen
class SessionSigner:
    """Mints and verifies session cookie values; one secret per API key."""

    #: Derived secrets, in the order of ``FELIX_API_KEY``; empty in development mode.
    secrets: tuple[bytes, ...] = attrs.field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionSigner:
        """The signer for ``settings``' API keys (none in development mode)."""
        return cls(tuple(_derive(key) for key in settings.api_keys))

    def mint(self, key_index: int, *, now: float, ttl: int = SESSION_TTL) -> tuple[str, int]:
        """A session value signed for the key at ``key_index``, living ``ttl`` seconds.

        Returns the value and its expiry in Unix seconds. Raises
        :class:`ValueError` for an index with no key (development mode has none).
        """
        if not 0 <= key_index < len(self.secrets) or ttl < 1:
            raise ValueError("a session needs a configured key and a positive ttl")
        expires = int(now + ttl)
        return sign(self.secrets[key_index], f"{_VERSION}|{_SCOPE}|{expires}"), expires

    def verify(self, value: str, *, now: float) -> int:
        """The expiry (Unix seconds) of a genuine, unexpired session value.

        Raises :class:`AuthenticationError` with one message for every failure:
        malformed, forged, signed for a key no longer configured, or expired.
        """
        opened = open_signed(value, self.secrets, max_length=MAX_VALUE_LENGTH)
        if opened is None:
            raise AuthenticationError(_INVALID)
        parts, _raw = opened
        if len(parts) != 3 or parts[:2] != [_VERSION, _SCOPE] or not parts[2].isdigit():
            raise AuthenticationError(_INVALID)
        expires = int(parts[2])
        if now >= expires:
            raise AuthenticationError(_INVALID)
        return expires


def _signer(settings: Settings) -> SessionSigner:
    # Settings are frozen: one derivation per configuration, not per request.
    return SessionSigner.from_settings(settings)


def signer_for(settings: Settings) -> SessionSigner:
    """The (cached) session signer of ``settings``."""
    return _signer(settings)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _header_values(headers: Headers, wanted: str) -> list[str]:
    return [_text(value) for name, value in headers if _text(name).lower() == wanted]


def cookie_value(headers: Headers) -> str | None:
    """The first ``felix_session`` value among the ``Cookie`` headers, if any."""
    for header in _header_values(headers, "cookie"):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name == COOKIE_NAME:
                return value.strip().strip('"')
    return None


def same_origin(headers: Headers) -> bool:
    """Whether the request has exactly one ``Origin``, naming the host and port it was sent to.

    The scheme is not compared (behind a proxy terminating TLS, Felix sees
    ``http``); the port defaults to the ``Origin`` scheme's.
    """
    pairs = [(_text(name), _text(value)) for name, value in headers]
    origins = _header_values(pairs, "origin")
    hosts = _header_values(pairs, "host")
    if len(origins) != 1 or len(hosts) != 1:
        return False
    origin = parse_origin(origins[0])
    # Pages are served over http(s); a ws: origin comes from no browser page.
    return origin is not None and origin[0] in {"http", "https"} and names_host(origin, hosts[0])


def _eligible(method: str, headers: list[tuple[str, str]], websocket: bool, stream: bool) -> bool:
    """Whether a cookie may count for this request at all (the CSRF checks)."""
    fetch_site = _header_values(headers, "sec-fetch-site")
    if fetch_site and fetch_site != ["same-origin"]:
        return False
    if websocket:
        return same_origin(headers)
    if stream:
        # EventSource cannot add a header, and a same-origin GET carries no
        # Origin: a browser's own Sec-Fetch-Site, or an Origin naming this
        # server, says the page is Felix's. The stream is read-only, and a
        # cross-site page could not read it anyway (Felix answers no CORS).
        return fetch_site == ["same-origin"] or same_origin(headers)
    if _header_values(headers, DASHBOARD_HEADER.lower()) != ["1"]:
        return False
    if method in {"GET", "HEAD"}:
        return True
    return method == "POST" and same_origin(headers)


def session_credential(
    settings: Settings,
    *,
    method: str,
    headers: Headers,
    websocket: bool = False,
    stream: bool = False,
    now: float | None = None,
) -> str | None:
    """A rate-limit name for the dashboard session this request carries, if it counts.

    Call it only for a route the cookie may open (the route table says
    which). None when the request carries no session cookie, carries one
    that is invalid or expired, or breaks the CSRF rules (see the module
    docstring): the caller then judges the request as if it had no
    credential. Call it only for a request that presents no API key or token.
    Never raises; development mode has no sessions.
    """
    if settings.dev_mode:
        return None
    pairs = [(_text(name), _text(value)) for name, value in headers]
    value = cookie_value(pairs)
    if value is None or not _eligible(method, pairs, websocket, stream):
        return None
    try:
        signer_for(settings).verify(value, now=time.time() if now is None else now)
    except AuthenticationError:
        return None
    return "s:" + hashlib.sha256(value.encode("ascii")).hexdigest()[:32]
