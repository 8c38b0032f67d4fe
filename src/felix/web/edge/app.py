"""The edge: the ASGI app every HTTP request and WebSocket handshake passes through.

For each scope, in this order (:meth:`Edge.admit`):

1. match the route table (:mod:`felix.web.edge.routes`) — a miss is decided
   here but answered only after authentication, so a 404 or 405 never comes
   before a 401;
2. the per-address rate limit of the route's class (a 429 reveals nothing);
3. :func:`~felix.web.edge.auth.authenticate` under the route's policy (401);
4. the browser's ``Origin`` where the route checks it (403);
5. the per-credential rate limit;
6. the 404 or 405 of step 1 (with ``Allow``);
7. the workflow id in the path (:func:`~felix.web.edge.params.check_workflow_id`).

Then the route is served: by one of the edge's plain ASGI handlers (publish,
the WebSocket and Server-Sent Events routes), or by Quart with the body already read by the one
bounded reader (:mod:`felix.web.edge.body`). Every refusal and every
unexpected exception is answered by the one renderer (:mod:`felix.web.edge.errors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import attrs
import trio

from felix._errors import FelixError
from felix._logging import REQUEST_ID
from felix._runtime.hub import Hub
from felix.settings import Settings
from felix.web._asgi import ASGIApp, Message, Receive, Scope, Send
from felix.web.edge.auth import Request, authenticate
from felix.web.edge.body import read_body
from felix.web.edge.errors import (
    MethodNotAllowed,
    RouteNotFound,
    send_answer,
    send_error,
)
from felix.web.edge.log_context import request_id
from felix.web.edge.origins import Origin, allowed_origins, check_origin
from felix.web.edge.params import Query, check_workflow_id, parse_query
from felix.web.edge.producer import PUBLISH_LIMIT, serve_publish
from felix.web.edge.publish import publish_events
from felix.web.edge.ratelimit import RateLimiter
from felix.web.edge.routes import (
    SSE_PREFIX,
    UNKNOWN,
    Match,
    RateClass,
    Route,
    ServedBy,
    match,
)
from felix.web.edge.sse import serve_sse_system, serve_sse_workflow
from felix.web.edge.tokens import TokenSigner
from felix.web.edge.websocket import serve_system, serve_workflow

__all__ = ["CREDENTIAL", "Admitted", "Edge"]

#: The scope key under which the edge leaves the credential's rate-limit name
#: (``k:<index>`` for an API key) for the handler, e.g. the dashboard's sign-in.
CREDENTIAL: Final = "felix.credential"

#: What each rate-limit class's messages call the requests they count.
_COUNTED: Final = {
    RateClass.PUBLISH: ("publishes from this address", "publishes with this key"),
    RateClass.HANDSHAKE: (
        "WebSocket handshakes and event streams from this address",
        "WebSocket handshakes and event streams with this credential",
    ),
}

WebSocketHandler = Callable[..., Awaitable[None]]
_WEBSOCKET_HANDLERS: Final[dict[str, WebSocketHandler]] = {
    "subscribe_workflow": serve_workflow,
    "subscribe_system": serve_system,
    "publish_stream": serve_publish,
}
#: The edge's streaming HTTP handlers (Server-Sent Events), by route name.
_STREAM_HANDLERS: Final[dict[str, WebSocketHandler]] = {
    "sse_workflow": serve_sse_workflow,
    "sse_system": serve_sse_system,
}


@attrs.frozen
class Admitted:
    """A request the edge let through: its route, path parameters, query and credential."""

    route: Route
    params: Mapping[str, str]
    query: Query
    credential: str | None


def _limiters(settings: Settings) -> dict[RateClass, RateLimiter]:
    publish = RateLimiter(
        rate=settings.rate_publish,
        burst=settings.rate_publish_burst,
        max_clients=settings.rate_max_clients,
    )
    handshake = RateLimiter(
        rate=settings.rate_handshake,
        burst=settings.rate_handshake_burst,
        max_clients=settings.rate_max_clients,
    )
    return {RateClass.PUBLISH: publish, RateClass.HANDSHAKE: handshake}


class Edge:
    """The outermost routing ASGI app; Quart (``quart``) serves what the table gives it.

    Holds no workflow state: the hub does. Owns the rate limiters' buckets
    (bounded by FELIX_RATE_MAX_CLIENTS).
    """

    def __init__(self, hub: Hub, settings: Settings, quart: ASGIApp) -> None:
        self.hub = hub
        self.settings = settings
        self.quart = quart
        self.signer = TokenSigner.from_settings(settings)
        self.limits = _limiters(settings)
        self.origins: frozenset[Origin] | None = allowed_origins(
            settings.allowed_origins, dev_mode=settings.dev_mode
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI scope, with its request id set for log lines; lifespan
        scopes go to Quart."""
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.quart(scope, receive, send)
            return
        token = REQUEST_ID.set(request_id(scope))
        try:
            if kind == "http":
                await self._http(scope, receive, send)
            else:
                await self._websocket(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)

    def admit(self, scope: Scope) -> Admitted:
        """Steps 1-7 of the module docstring; raises the :class:`FelixError` refusing ``scope``."""
        websocket = scope["type"] == "websocket"
        method = "GET" if websocket else scope["method"]
        query = parse_query(scope.get("query_string", b""))
        refusal: FelixError | None = None
        try:
            found = match(method, scope["path"], websocket=websocket)
        except MethodNotAllowed as error:
            refusal, found = error, Match(error.route, {})
        except RouteNotFound as error:
            refusal, found = error, Match(attrs.evolve(UNKNOWN, query_credentials=websocket), {})
        route = found.route
        limiter = self.limits.get(route.rate)
        counted = _COUNTED.get(route.rate, ("", ""))
        if limiter is not None and limiter.enabled:
            client = scope.get("client")
            address = client[0] if client else "unknown"
            limiter.check(f"a:{address}", trio.current_time(), what=counted[0])
        headers = scope.get("headers", [])
        request = Request(method, scope["path"], headers, query, found.params, websocket)
        credential = authenticate(route, request, settings=self.settings, signer=self.signer)
        if route.checks_origin:
            check_origin(self.origins, headers)
        if limiter is not None and limiter.enabled and credential is not None:
            limiter.check(credential, trio.current_time(), what=counted[1])
        if refusal is not None:
            raise refusal
        if "workflow_id" in found.params:
            check_workflow_id(found.params["workflow_id"])
        return Admitted(route, found.params, query, credential)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        where = f"{scope['method']} {scope['path']}"
        try:
            admitted = self.admit(scope)
            route = admitted.route
            limit = getattr(self.settings, route.body_limit) if route.body_limit else 0
            stream = _STREAM_HANDLERS.get(route.name)
            if stream is not None:
                # An event stream answers (and ends) by itself.
                query = admitted.query.strict()
                await stream(self.hub, scope, receive, send, query=query, params=admitted.params)
                return
            if route.served_by is ServedBy.EDGE:
                answer = await publish_events(
                    self.hub, scope, receive, params=admitted.params, limit=limit
                )
            elif route.body_limit is not None:
                # The one bounded reader reads the body; Quart gets it whole.
                receive = _replay(
                    await read_body(receive, scope.get("headers", []), limit), receive
                )
        except Exception as error:
            if isinstance(error, FelixError) and scope["path"].startswith(SSE_PREFIX):
                self.hub.counters.refused(error.code)  # an event stream, as a handshake
            await send_error(send, error, where=where)
            return
        if route.served_by is ServedBy.EDGE:
            await send_answer(send, answer)
            return
        # Quart renders its own errors (through render_error) once it has the request.
        scope[CREDENTIAL] = admitted.credential
        await self.quart(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            admitted = self.admit(scope)
            # The scope lives as long as the connection, and its request headers
            # (most of a KiB) were only needed to admit it: an idle WebSocket
            # need not hold them (access log lines read none in Felix's format).
            scope["headers"] = []
            handler = _WEBSOCKET_HANDLERS[admitted.route.name]
            if admitted.route.name == "publish_stream":
                # Each frame is a publish: it counts as one, per key (per address without).
                client = scope.get("client")
                bucket = admitted.credential or f"a:{client[0] if client else 'unknown'}"
                scope[PUBLISH_LIMIT] = (self.limits[RateClass.PUBLISH], bucket)
            await handler(
                self.hub,
                scope,
                receive,
                send,
                query=admitted.query.strict(),
                params=admitted.params,
            )
        except FelixError as error:
            self.hub.counters.refused(error.code)  # a bounded label: the contract's code
            await send_error(send, error, websocket=True)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the body read already, then waits on the real one."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
