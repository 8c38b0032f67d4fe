"""The route table: every path Felix answers, with the policy each one is served under.

One list, :data:`ROUTES`, read top to bottom the way Starlette's ``routing.py``
is: each :class:`Route` is one operation (a method on a path, or a WebSocket
path) with

- which credentials open it (:class:`Credential`: the API key, a subscribe
  token for the path's workflow, the dashboard's session cookie; none = open),
- its rate-limit class (:class:`RateClass`: ``FELIX_RATE_PUBLISH`` or
  ``FELIX_RATE_HANDSHAKE``),
- the setting bounding its request body, if it takes one,
- who serves it: the edge's own plain ASGI handlers (the hot paths) or Quart.

Paths are written here and nowhere else: Quart's URL rules, the OpenAPI
document and the edge's matching are all made from this table
(``tests/web/test_edge.py`` checks that). The Server-Sent Events routes
(``/api/v1/sse/...``) have the policy of their WebSocket twins: the same
credentials (query ones included), rate class and origin check.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Final

import attrs

from felix.web.edge.errors import MethodNotAllowed, RouteNotFound, quote

__all__ = [
    "HTTP_METHODS",
    "ROUTES",
    "WEBSOCKET",
    "Credential",
    "Match",
    "RateClass",
    "Route",
    "ServedBy",
    "match",
    "routes_at",
]

#: The pseudo-method of WebSocket routes (a handshake is a GET with Upgrade).
WEBSOCKET: Final = "WEBSOCKET"
#: The HTTP methods routes may use; anything else is a 405 on a known path.
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Credential(enum.Flag):
    """What may open a route; an empty flag (:attr:`OPEN`) opens it to anyone."""

    OPEN = 0
    #: ``FELIX_API_KEY``: ``Authorization: Bearer K`` / ``X-API-Key: K`` (and
    #: ``?api_key=K`` where :attr:`Route.query_credentials`).
    API_KEY = enum.auto()
    #: A subscribe token (``?token=T``) minted for the path's ``workflow_id``.
    TOKEN = enum.auto()
    #: The dashboard's session cookie, under :mod:`felix.web.edge.session`'s CSRF rules.
    SESSION = enum.auto()


class RateClass(enum.Enum):
    """Which configured rate limit a route counts against."""

    NONE = "none"
    #: ``FELIX_RATE_PUBLISH``: per address before the key is checked, then per key.
    PUBLISH = "publish"
    #: ``FELIX_RATE_HANDSHAKE``: per address before the credential, then per credential.
    HANDSHAKE = "handshake"


class ServedBy(enum.Enum):
    """Who answers a route once the edge has let it through."""

    #: A plain ASGI handler of the edge (no framework on the hot path).
    EDGE = "edge"
    #: The Quart-Trio app (``felix.web.routes``), with a URL rule made from the table.
    QUART = "quart"


#: ``{name}`` matches one path segment; ``{name:path}`` the rest of the path.
_PARAM: Final = re.compile(r"\{([a-z_]+)(:path)?\}")


@attrs.frozen
class Route:
    """One operation Felix serves, and the policy it is served under."""

    #: A stable name: the Quart endpoint, the OpenAPI ``operationId``'s source.
    name: str
    #: The path with ``{param}`` placeholders (each matches one segment).
    path: str
    #: An HTTP method, or :data:`WEBSOCKET`.
    method: str
    #: The credentials that open it; :attr:`Credential.OPEN` for none.
    opens: Credential
    served_by: ServedBy = ServedBy.QUART
    rate: RateClass = RateClass.NONE
    #: The :class:`~felix.settings.Settings` attribute bounding the request body;
    #: None for a route that reads no body.
    body_limit: str | None = None
    #: Whether credentials may come in the query (``?api_key=``, ``?token=``):
    #: browsers cannot set headers on WebSockets or ``EventSource``.
    query_credentials: bool = False
    #: Whether a browser's ``Origin`` must be allowed (FELIX_ALLOWED_ORIGINS).
    checks_origin: bool = False
    pattern: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)
    #: The literal start of the path, before any ``{param}``: a cheap first test.
    prefix: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # split() gives literal text, then a name and its ":path" (or None), and so on.
        parts = _PARAM.split(self.path)
        object.__setattr__(self, "prefix", parts[0])
        regex = re.escape(parts[0])
        for name, kind, literal in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
            regex += f"(?P<{name}>{'.+' if kind else '[^/]+'})" + re.escape(literal)
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def websocket(self) -> bool:
        """Whether this is a WebSocket route."""
        return self.method == WEBSOCKET

    @property
    def stream(self) -> bool:
        """Whether this is a Server-Sent Events route (a response that streams events)."""
        return self.path.startswith(SSE_PREFIX)

    @property
    def quart_rule(self) -> str:
        """The path in Werkzeug's rule syntax (``<param>``), for Quart's URL map."""
        return _PARAM.sub(lambda m: f"<{'path:' if m[2] else ''}{m[1]}>", self.path)

    @property
    def openapi_path(self) -> str:
        """The path in OpenAPI's syntax (``{param}``, whatever the parameter matches)."""
        return _PARAM.sub(r"{\1}", self.path)

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the path's ``{param}`` placeholders, in order."""
        return tuple(name for name, _ in _PARAM.findall(self.path))


# --- the paths, each written once ---------------------------------------------------------

WORKFLOWS: Final = "/api/v1/workflows"
WORKFLOW: Final = WORKFLOWS + "/{workflow_id}"
EVENTS: Final = WORKFLOW + "/events"
TOKENS: Final = WORKFLOW + "/tokens"
BROADCAST: Final = "/api/v1/broadcast"
CONNECTIONS: Final = "/api/v1/connections"
STATS: Final = "/api/v1/stats"
WS_WORKFLOW: Final = "/api/v1/ws/workflows/{workflow_id}"
WS_SYSTEM: Final = "/api/v1/ws/system/events"
SSE_PREFIX: Final = "/api/v1/sse/"
SSE_WORKFLOW: Final = SSE_PREFIX + "workflows/{workflow_id}"
SSE_SYSTEM: Final = SSE_PREFIX + "system/events"
WS_PUBLISH: Final = "/api/v1/ws/publish"
HEALTHZ: Final = "/healthz"
METRICS: Final = "/metrics"
OPENAPI: Final = "/openapi.json"
DOCS: Final = "/docs"
DASHBOARD: Final = "/"
DASHBOARD_SESSION: Final = "/dashboard/session"
DASHBOARD_FILE: Final = "/dashboard/{name:path}"

_KEY: Final = Credential.API_KEY
_READ: Final = Credential.API_KEY | Credential.SESSION
_OPEN: Final = Credential.OPEN
_BODY: Final = "max_body_bytes"

#: Every route, in matching order (a literal path before a ``{param}`` one).
ROUTES: Final[tuple[Route, ...]] = (
    Route("create_workflow", WORKFLOWS, "POST", _KEY, body_limit=_BODY),
    Route("list_workflows", WORKFLOWS, "GET", _READ),
    Route("get_workflow", WORKFLOW, "GET", _READ),
    Route("cancel_workflow", WORKFLOW, "DELETE", _KEY),
    Route("list_events", EVENTS, "GET", _KEY),
    Route(
        "publish_events",
        EVENTS,
        "POST",
        _KEY,
        served_by=ServedBy.EDGE,
        rate=RateClass.PUBLISH,
        body_limit=_BODY,
    ),
    Route("mint_token", TOKENS, "POST", _READ, body_limit=_BODY),
    Route("broadcast", BROADCAST, "POST", _KEY, rate=RateClass.PUBLISH, body_limit=_BODY),
    Route("list_connections", CONNECTIONS, "GET", _KEY),
    Route("stats", STATS, "GET", _KEY),
    Route(
        "subscribe_workflow",
        WS_WORKFLOW,
        WEBSOCKET,
        Credential.API_KEY | Credential.TOKEN,
        served_by=ServedBy.EDGE,
        rate=RateClass.HANDSHAKE,
        query_credentials=True,
        checks_origin=True,
    ),
    Route(
        "subscribe_system",
        WS_SYSTEM,
        WEBSOCKET,
        _READ,
        served_by=ServedBy.EDGE,
        rate=RateClass.HANDSHAKE,
        query_credentials=True,
        checks_origin=True,
    ),
    # The WebSocket streams' twins for EventSource, under the same policy.
    Route(
        "sse_workflow",
        SSE_WORKFLOW,
        "GET",
        Credential.API_KEY | Credential.TOKEN,
        served_by=ServedBy.EDGE,
        rate=RateClass.HANDSHAKE,
        query_credentials=True,
        checks_origin=True,
    ),
    Route(
        "sse_system",
        SSE_SYSTEM,
        "GET",
        _READ,
        served_by=ServedBy.EDGE,
        rate=RateClass.HANDSHAKE,
        query_credentials=True,
        checks_origin=True,
    ),
    # The producer stream: the API key only (never a token or a session);
    # each frame is a publish, bounded by the body limit.
    Route(
        "publish_stream",
        WS_PUBLISH,
        WEBSOCKET,
        _KEY,
        served_by=ServedBy.EDGE,
        rate=RateClass.HANDSHAKE,
        body_limit=_BODY,
        query_credentials=True,
        checks_origin=True,
    ),
    Route("healthz", HEALTHZ, "GET", _OPEN),
    Route("metrics", METRICS, "GET", _KEY),
    Route("openapi", OPENAPI, "GET", _OPEN),
    Route("docs", DOCS, "GET", _OPEN),
    Route("dashboard", DASHBOARD, "GET", _OPEN),
    Route("dashboard_session", DASHBOARD_SESSION, "GET", _OPEN),
    # The sign-in checks the key like any keyed route; the handler mints a
    # session for the key the edge matched.
    Route("dashboard_sign_in", DASHBOARD_SESSION, "POST", _KEY, body_limit=_BODY),
    Route("dashboard_sign_out", DASHBOARD_SESSION, "DELETE", _OPEN),
    Route("dashboard_file", DASHBOARD_FILE, "GET", _OPEN),
)

#: The policy of a request that matches no route: judged as if it needed the
#: key, so that a 404 is never an answer given before authentication.
UNKNOWN: Final = Route("unknown", "/", "GET", _KEY, query_credentials=True)


@attrs.frozen
class Match:
    """A route and the path parameters it matched."""

    route: Route
    params: Mapping[str, str]


def routes_at(path: str, *, websocket: bool) -> Iterator[tuple[Route, Mapping[str, str]]]:
    """Every route of the given kind whose path matches ``path``, in table order."""
    seen: set[str] = set()
    for route in ROUTES:
        # The prefix test spares most routes their regex (this runs per request).
        if route.websocket != websocket or not path.startswith(route.prefix):
            continue
        found = route.pattern.fullmatch(path)
        # A literal path shadows a {param} one of the same shape for every
        # method (``/dashboard/session`` is not a dashboard file).
        if found is not None and (route.path in seen or not seen):
            seen.add(route.path)
            yield route, found.groupdict()


def match(method: str, path: str, *, websocket: bool = False) -> Match:
    """The route serving ``method`` on ``path``.

    ``HEAD`` is served by the ``GET`` route. Raises :class:`RouteNotFound`
    (404) when no route has this path, and :class:`MethodNotAllowed` (405,
    carrying the ``Allow`` list) when routes have it but none this method.
    """
    candidates = list(routes_at(path, websocket=websocket))
    if not candidates:
        kind = "WebSocket route" if websocket else "route"
        raise RouteNotFound(f"no {kind} at {quote(path)}")
    wanted = WEBSOCKET if websocket else ("GET" if method == "HEAD" else method)
    for route, params in candidates:
        if route.method == wanted:
            return Match(route, params)
    allow = sorted({route.method for route, _ in candidates})
    if "GET" in allow:
        allow.append("HEAD")
    raise MethodNotAllowed(
        f"{quote(method, 16)} is not served at {quote(path)}; use {', '.join(allow)}",
        allow=tuple(allow),
        route=candidates[0][0],
    )
