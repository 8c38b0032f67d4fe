"""The app factory and the Hypercorn server around it."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import hypercorn.trio
import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from felix._errors import AuthenticationError, FelixError, RateLimited
from felix._runtime.hub import Hub
from felix.settings import Settings
from felix.web._asgi import ASGIApp, Receive, Scope, Send, send_error
from felix.web.auth import check_api_key, key_from_headers
from felix.web.dashboard import dashboard, is_dashboard_path
from felix.web.hypercorn import (
    FelixConfig,
    RedactingLogger,
    abort_stalled_writes,
    close_http_connections,
    install,
)
from felix.web.log_context import LogContext
from felix.web.metrics import add_metrics_route
from felix.web.openapi import OPEN_PATHS, add_openapi_routes
from felix.web.ratelimit import RateLimiter
from felix.web.rest import api
from felix.web.session import session_credential
from felix.web.tokens import TokenSigner
from felix.web.ws import WebSocketRouter

__all__ = ["create_app", "hypercorn_config", "serve"]

logger = logging.getLogger("felix.web")

#: Seconds granted to the close frames still being written after the grace period.
_LAST_WRITES = 0.2

#: Paths served without the API key (probes).
_OPEN_PATHS = frozenset({"/healthz"}) | OPEN_PATHS

#: The routes FELIX_RATE_PUBLISH limits: publishing events and broadcasting.
_PUBLISH_PATH = re.compile(r"/api/v1/workflows/[^/]+/events|/api/v1/broadcast")


def _error_response(error: FelixError) -> Response:
    response = jsonify(error.to_json())
    response.status_code = error.http_status
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


class PublishLimits:
    """ASGI layer in front of every route: ``FELIX_RATE_PUBLISH`` per address and per key.

    It sits outside the routing so that every way a publish is served is
    limited alike. The per-address bucket is checked first, before the key is
    (a key guesser is slowed down like anybody else; a 429 reveals nothing);
    the per-key bucket only for a valid key, so that wrong keys cannot use up
    a real key's allowance. Anything else passes straight through.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limits = RateLimiter(
            rate=settings.rate_publish,
            burst=settings.rate_publish_burst,
            max_clients=settings.rate_max_clients,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI scope, answering 429 to a publish over its limits."""
        if (
            self.limits.enabled
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and _PUBLISH_PATH.fullmatch(scope["path"])
        ):
            try:
                self._check(scope)
            except RateLimited as error:
                await send_error(send, error)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        client = scope.get("client")
        now = trio.current_time()
        self.limits.check(
            f"a:{client[0] if client else 'unknown'}", now, what="publishes from this address"
        )
        try:
            key = check_api_key(self.settings.api_keys, key_from_headers(scope["headers"]))
        except AuthenticationError:
            return  # refused further in, with 401
        if key is not None:
            self.limits.check(f"k:{key}", now, what="publishes with this key")


def create_app(hub: Hub, settings: Settings | None = None) -> QuartTrio:
    """Build the Quart-Trio app serving the contract's REST and WebSocket routes.

    The app holds no workflow state: it forwards to ``hub``, which must stay
    open while the app serves. WebSocket scopes are answered by
    :class:`~felix.web.ws.WebSocketRouter` before Quart sees them.
    """
    settings = settings or hub.settings
    app = QuartTrio("felix")
    app.config.update(
        FELIX_HUB=hub,
        FELIX_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.register_blueprint(api)
    app.register_blueprint(dashboard)  # GET / and /dashboard/..., open; its session routes
    add_metrics_route(app, hub)  # GET /metrics, behind the API key like the REST API
    add_openapi_routes(app, settings)  # GET /openapi.json and /docs, open

    app.config.update(FELIX_TOKENS=TokenSigner.from_settings(settings))

    @app.before_request
    async def authenticate() -> None:
        if request.path in _OPEN_PATHS or is_dashboard_path(request.path):
            return
        presented = key_from_headers(request.headers.items())
        if presented is None and session_credential(
            settings, method=request.method, path=request.path, headers=request.headers.items()
        ):
            return  # the dashboard's session cookie, where felix.web.session lets it count
        check_api_key(settings.api_keys, presented)

    @app.get("/healthz")
    async def healthz() -> Response:
        # A draining server, or one that lost its broker, answers 503 so that
        # load balancers stop routing new work to it (its clients stay).
        health = hub.health()
        broker_up = health["broker"].get("connected", True)
        status = "ok" if broker_up else "broker_unavailable"
        if not hub.accepting:
            status = "shutting_down"
        response = jsonify({"status": status, **health})
        response.status_code = 200 if status == "ok" else 503
        return response

    @app.errorhandler(FelixError)
    async def felix_error(error: FelixError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        if error.code == 413:
            code, message = "too_large", f"request body is over {settings.max_body_bytes} bytes"
        else:
            code = (error.name or "error").lower().replace(" ", "_")
            message = error.description or error.name
        response = jsonify({"error": code, "message": message})
        response.status_code = error.code or 500
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        logger.error("unhandled error in %s %s", request.method, request.path, exc_info=error)
        response = jsonify({"error": "internal_error", "message": "internal server error"})
        response.status_code = 500
        return response

    quart_app: ASGIApp = app.asgi_app  # type: ignore[assignment]
    router = WebSocketRouter(
        hub, settings, close_http_connections(quart_app, settings.send_timeout)
    )
    app.asgi_app = LogContext(PublishLimits(router, settings))  # type: ignore[method-assign,assignment]
    return app


def hypercorn_config(settings: Settings) -> FelixConfig:
    """The Hypercorn configuration Felix runs with (and its fixes read)."""
    config = FelixConfig.from_settings(settings)
    config.bind = [f"{settings.host}:{settings.port}"]
    config.logger_class = RedactingLogger
    # JSON logs: access lines go through the root logger's JSON handler (stderr).
    access = logging.getLogger("hypercorn.access") if settings.log_format == "json" else "-"
    config.accesslog = access if settings.access_log else None
    # The path with its query (redacted by RedactingLogger: after= and types=
    # are worth seeing), the status, the size and the time taken in µs.
    config.access_log_format = '%(h)s "%(R)s" %(s)s %(b)s %(D)sus'
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = settings.log_level
    # The hub drains and closes WebSockets before Hypercorn's own shutdown
    # starts, so what is left for Hypercorn is in-flight HTTP requests.
    config.graceful_timeout = 1.0
    config.include_server_header = False
    return config


async def serve(
    hub: Hub,
    settings: Settings | None = None,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` over HTTP and WebSocket with Hypercorn's trio worker.

    Calls ``task_status.started(binds)`` with the bound URLs once listening.
    When ``shutdown_trigger`` returns, new WebSockets are refused with 503,
    open ones drain and close with 1001 within ``settings.shutdown_grace``;
    connections whose client stopped reading are then reset, and Hypercorn
    stops. Installs Felix's Hypercorn fixes (:mod:`felix.web.hypercorn`).
    """
    settings = settings or hub.settings
    install()
    app = create_app(hub, settings)
    config = hypercorn_config(settings)

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        await hub.shutdown(settings.shutdown_grace)
        # Whatever is still writing now writes to a client that stopped
        # reading: it must not hold the process past the grace period.
        abort_stalled_writes(config, within=_LAST_WRITES)

    await hypercorn.trio.serve(app, config, shutdown_trigger=trigger, task_status=task_status)
