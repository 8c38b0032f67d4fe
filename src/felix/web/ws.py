"""The WebSocket edge: handshake checks, then one writer and one reader.

This is a plain ASGI callable placed in front of the Quart app, not a Quart
route: it refuses handshakes with a real HTTP status and JSON body (the ASGI
``websocket.http.response`` extension, which Hypercorn implements), it closes
with 1011 when something breaks after the accept (Quart would close with
1000), and it spares every frame Quart's per-message layers.

Each connection has one task of its own, the writer: it writes what direct
writes left over and the subscription's queued frames, and finally the close
frame. Client messages (pings, commands) and the disconnect reach
:func:`_on_message` from Hypercorn's connection task
(:mod:`felix.web.hypercorn.connection`), so no reader task waits in ``receive()``; a
disconnect ends the writer at once. Where that hand-over is not available, a
reader task in a nursery with the writer does the same, and whichever ends
first cancels the other. Leaving :meth:`Hub.subscribe`'s block unregisters the
subscriber: nothing outlives the connection.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
import weakref
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qsl

import attrs
import trio

from felix._core.events import TYPE_NAME, Frame, decode_json, format_timestamp, make_frame
from felix._errors import (
    AuthenticationError,
    BadRequest,
    FelixError,
    OriginNotAllowed,
    WorkflowNotFound,
)
from felix._logging import CONNECTION_ID
from felix._runtime.hub import WORKFLOW_ID, Hub
from felix._runtime.subscription import Subscription
from felix.settings import Settings
from felix.web._asgi import ASGIApp, Message, Receive, Scope, Send, send_error
from felix.web.auth import check_api_key, key_from_headers
from felix.web.fast_publish import PUBLISH_PATH, handle_publish
from felix.web.hypercorn import DirectWriter, listen
from felix.web.origins import names_host, parse_origin
from felix.web.ratelimit import RateLimiter
from felix.web.session import session_credential
from felix.web.tokens import TokenSigner

__all__ = ["WebSocketRouter"]

logger = logging.getLogger("felix.ws")

WORKFLOW_PATH: Final = re.compile(r"^/api/v1/ws/workflows/(?P<workflow_id>[^/]+)$")
SYSTEM_PATH: Final = "/api/v1/ws/system/events"
CLOSE_INTERNAL_ERROR: Final = 1011
#: The answer to the plain-text ``ping``, built once.
_PONG: Final = Frame.of("pong", "pong")
#: Largest ``after`` accepted; far beyond any real seq, small enough to stay an int64.
_MAX_AFTER: Final = 2**53


def _remote(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


# --- handshake security: rate limits, credentials, origin ----------------------------

#: Default ports of the schemes an Origin header can carry.
_INVALID_TOKEN: Final = "invalid or expired token"


@attrs.define(eq=False)
class _HandshakeGuard:
    """The checks before a handshake is looked at further; one per router.

    Order: the per-address rate limit (it is what slows a guesser, and a 429
    reveals nothing), then the credential (401), then the browser's origin
    (403), then the per-credential rate limit.
    """

    settings: Settings
    signer: TokenSigner
    limits: RateLimiter
    #: None: every origin is allowed; empty: same origin only.
    origins: frozenset[tuple[str, str, int]] | None

    @classmethod
    def for_router(cls, router: WebSocketRouter) -> _HandshakeGuard:
        guard = _GUARDS.get(router)
        if guard is None:
            settings = router.settings
            allowed = settings.allowed_origins
            origins: frozenset[tuple[str, str, int]] | None = None
            if "*" not in allowed and (allowed or not settings.dev_mode):
                origins = frozenset(o for o in map(parse_origin, allowed) if o is not None)
            guard = _GUARDS[router] = cls(
                settings=settings,
                signer=TokenSigner.from_settings(settings),
                limits=RateLimiter(
                    rate=settings.rate_handshake,
                    burst=settings.rate_handshake_burst,
                    max_clients=settings.rate_max_clients,
                ),
                origins=origins,
            )
        return guard

    def check(self, scope: Scope) -> None:
        """Raise the :class:`FelixError` that refuses this handshake, if any."""
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if self.limits.enabled:
            self.limits.check(
                f"a:{address}", trio.current_time(), what="WebSocket handshakes from this address"
            )
        credential = self._authenticate(scope)
        self._check_origin(scope)
        if credential is not None and self.limits.enabled:
            self.limits.check(
                credential, trio.current_time(), what="WebSocket handshakes with this credential"
            )

    def _authenticate(self, scope: Scope) -> str | None:
        # A handshake that presents a token is judged by its token alone, in
        # development mode too. Returns a rate-limit name for the credential.
        token = _query_value(scope, "token")
        if token is None:
            presented = _presented_key(scope)
            if presented is None:
                # The dashboard's session cookie, where felix.web.session lets it count.
                session = session_credential(
                    self.settings,
                    method="GET",
                    path=scope["path"],
                    headers=scope.get("headers", []),
                    websocket=True,
                )
                if session is not None:
                    return session
            index = check_api_key(self.settings.api_keys, presented)
            return None if index is None else f"k:{index}"
        grant = self.signer.verify(token, now=time.time())
        match = WORKFLOW_PATH.match(scope["path"])
        # The same answer as for a forged token: nothing but its own workflow.
        if match is None or match["workflow_id"] != grant.workflow_id:
            raise AuthenticationError(_INVALID_TOKEN)
        return f"t:{grant.token_id}"

    def _check_origin(self, scope: Scope) -> None:
        # Only browsers send Origin; other clients are not asked for one.
        if self.origins is None:
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        host = next((v.decode("latin-1") for n, v in headers if n.lower() == b"host"), "")
        for name, value in headers:
            if name.lower() != b"origin":
                continue
            text = value.decode("latin-1")
            origin = parse_origin(text)
            if origin is None or not (
                origin in self.origins if self.origins else names_host(origin, host)
            ):
                raise OriginNotAllowed(
                    f"origin {text[:100]!r} may not open WebSockets here; see FELIX_ALLOWED_ORIGINS"
                )


_GUARDS: weakref.WeakKeyDictionary[WebSocketRouter, _HandshakeGuard] = weakref.WeakKeyDictionary()


def _query_value(scope: Scope, name: str) -> str | None:
    """The first value of query parameter ``name``, parsed leniently (never raises)."""
    raw: str = scope.get("query_string", b"").decode("latin-1")
    with contextlib.suppress(ValueError):
        for key, value in parse_qsl(raw, keep_blank_values=True, max_num_fields=64):
            if key == name:
                return value
    return None


class WebSocketRouter:
    """ASGI app serving the contract's two WebSocket routes.

    Any other scope goes to ``fallback`` (the Quart app).
    """

    def __init__(self, hub: Hub, settings: Settings, fallback: ASGIApp) -> None:
        self.hub = hub
        self.settings = settings
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI scope."""
        if scope["type"] != "websocket":
            if scope["type"] == "http" and scope["method"] == "POST":
                match = PUBLISH_PATH.fullmatch(scope["path"])
                if match is not None:
                    await handle_publish(
                        scope,
                        receive,
                        send,
                        hub=self.hub,
                        settings=self.settings,
                        workflow_id=match["workflow_id"],
                    )
                    return
            await self.fallback(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            await self._serve(scope, receive, send)
        except FelixError as error:
            self.hub.counters.refused(error.code)  # a bounded label: the contract's code
            await send_error(send, error, websocket=True)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Rate limit, credentials (an API key or a subscribe token) and origin
        # come before anything that could reveal whether a workflow exists.
        _HandshakeGuard.for_router(self).check(scope)
        query = self._parse_query(scope)
        path: str = scope["path"]
        types = _parse_types(query)
        if path == SYSTEM_PATH:
            if "after" in query:
                raise BadRequest("after= is not supported on the system stream")
            async with self.hub.subscribe_system(types=types, remote=_remote(scope)) as sub:
                await self._run(sub, receive, send)
            return
        match = WORKFLOW_PATH.match(path)
        if match is None:
            raise WorkflowNotFound(f"no WebSocket route at {path}")
        workflow_id = match["workflow_id"]
        after = _parse_after(query)
        if not WORKFLOW_ID.fullmatch(workflow_id):
            raise WorkflowNotFound(f"workflow {workflow_id} not found")
        async with self.hub.subscribe(
            workflow_id, after=after, types=types, remote=_remote(scope)
        ) as sub:
            await self._run(sub, receive, send)

    def _parse_query(self, scope: Scope) -> dict[str, str]:
        try:
            pairs = parse_qsl(
                scope.get("query_string", b"").decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=32,
            )
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the query string cannot be parsed") from None
        query: dict[str, str] = {}
        for name, value in pairs:
            if name in query:
                raise BadRequest(f"query parameter {name!r} is given more than once")
            query[name] = value
        return query

    async def _run(self, sub: Subscription, receive: Receive, send: Send) -> None:
        CONNECTION_ID.set(sub.connection_id)  # for JSON log lines; this task is the connection's
        # Installed before the accept, so that no message reaches the channel first.
        listening = listen(partial(_on_message, sub, contextvars.copy_context()))
        await send({"type": "websocket.accept"})
        try:
            if listening is None:
                # Only receive() tells of client messages: a reader task waits there.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read, sub, receive, nursery.cancel_scope)
                    await _write_any(sub, send)
                    nursery.cancel_scope.cancel()
            else:
                if not listening:
                    sub.detach()  # the client left during the handshake
                # Client messages come to _on_message from the connection's
                # own task: this task only writes.
                direct = DirectWriter.for_current_connection()
                if direct is None:
                    await _write(sub, send)
                else:
                    await _write_direct(sub, direct, send)
        except Exception:
            # After the accept the client can only learn of a failure from the
            # close code; Quart would say 1000 here, which reads as success.
            logger.exception("connection %s failed", sub.connection_id)
            await send(
                {
                    "type": "websocket.close",
                    "code": CLOSE_INTERNAL_ERROR,
                    "reason": "internal error",
                }
            )

    async def _read(self, sub: Subscription, receive: Receive, done: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                done.cancel()
                return
            if message["type"] == "websocket.receive":
                _answer(sub, message)


def _on_message(sub: Subscription, context: contextvars.Context, message: Message) -> None:
    """A client message, handed over by the connection's task (never raises).

    ``context`` is this connection's (request and connection ids for the log).
    """
    try:
        if message["type"] == "websocket.receive":
            _answer(sub, message)
        elif message["type"] == "websocket.disconnect":
            sub.detach()  # the writer stops at once; nothing can reach the client now
    except Exception:
        # Raised here, it would end Hypercorn's connection task instead.
        context.run(logger.exception, "connection %s failed", sub.connection_id)
        sub.kick(CLOSE_INTERNAL_ERROR, "internal error")


async def _write_any(sub: Subscription, send: Send) -> None:
    direct = DirectWriter.for_current_connection()
    if direct is None:
        await _write(sub, send)
    else:
        await _write_direct(sub, direct, send)


async def _write(sub: Subscription, send: Send) -> None:
    """The ASGI path: one ``websocket.send`` per frame (compression, HTTP/2, TLS)."""
    while batch := await sub.receive_batch():
        for frame in batch:
            await send({"type": "websocket.send", "text": frame.text})
    await send({"type": "websocket.close", "code": sub.close_code, "reason": sub.close_reason})


async def _write_direct(sub: Subscription, direct: DirectWriter, send: Send) -> None:
    """The hot path's writer: what direct writes left over, then queued frames, in one write."""
    direct.attach(sub)
    try:
        while (data := await sub.receive_wire()) is not None:
            await direct.send(data)
            sub.written()
            del data  # not kept while the connection idles
    finally:
        direct.detach(sub)
    await send({"type": "websocket.close", "code": sub.close_code, "reason": sub.close_reason})


def _answer(sub: Subscription, message: Message) -> None:
    text = message.get("text")
    if text is None:
        reply: dict[str, Any] = {
            "type": "command_error",
            "message": "binary frames are not understood; send JSON text",
        }
    elif text == "ping":
        sub.offer([_PONG], control=True)
        return
    else:
        reply = _command_reply(text)
    sub.offer([make_frame(reply)], control=True)


def _command_reply(text: str) -> dict[str, Any]:
    try:
        command = decode_json(text)
    except FelixError as error:
        return {"type": "command_error", "message": error.message}
    if not isinstance(command, dict) or not isinstance(command.get("type"), str):
        return {"type": "command_error", "message": 'a command is a JSON object with a "type"'}
    if command["type"] == "ping":
        return {"type": "pong", "timestamp": format_timestamp(datetime.now(UTC))}
    return {
        "type": "command_error",
        "message": f"unknown command {command['type'][:64]!r}; the server understands: ping",
    }


def _presented_key(scope: Scope) -> str | None:
    # Lenient on purpose: with a wrong key, a malformed query must still get
    # 401 rather than 400, so nothing is answered before authentication.
    raw: str = scope.get("query_string", b"").decode("latin-1")
    with contextlib.suppress(ValueError):
        for name, value in parse_qsl(raw, keep_blank_values=True, max_num_fields=64):
            if name == "api_key":
                return value
    return key_from_headers(scope.get("headers", []))


def _parse_after(query: dict[str, str]) -> int | None:
    raw = query.get("after")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > _MAX_AFTER:
        raise BadRequest(f"after must be a non-negative integer, got {raw[:32]!r}")
    return int(raw)


def _parse_types(query: dict[str, str]) -> frozenset[str] | None:
    raw = query.get("types")
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",")]
    bad = [name for name in names if not TYPE_NAME.fullmatch(name)]
    if bad or not names:
        raise BadRequest(
            f"types must be a comma-separated list of event type names, got {raw[:64]!r}"
        )
    return frozenset(names)
