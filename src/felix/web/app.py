"""The app factory and the Hypercorn server around it.

The app is the edge (:class:`felix.web.edge.Edge`) in front of a Quart-Trio
app: the edge matches the route table, rate-limits, authenticates and checks
ids for every request; Quart serves the routes the table gives it, with URL
rules made from the same table; both answer errors through the edge's one
renderer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.trio
import trio
from quart import Response, request
from quart_trio import QuartTrio

from felix._errors import FelixError
from felix._runtime.hub import Hub
from felix.settings import Settings
from felix.web._asgi import ASGIApp
from felix.web.edge import (
    ROUTES,
    Edge,
    ServedBy,
    TokenSigner,
    error_for_status,
    render_error,
)
from felix.web.hypercorn import (
    FelixConfig,
    RedactingLogger,
    abort_stalled_writes,
    close_http_connections,
    install,
)
from felix.web.routes import View, dashboard, metrics, openapi, rest

__all__ = ["create_app", "hypercorn_config", "serve"]

logger = logging.getLogger("felix.web")

#: Seconds granted to the close frames still being written after the grace period.
_LAST_WRITES = 0.2


def _add_routes(app: QuartTrio, hub: Hub, settings: Settings) -> None:
    """Give Quart a URL rule for every route the table says Quart serves."""
    views: dict[str, View] = {
        **rest.VIEWS,
        **openapi.views(settings),
        "metrics": metrics.view(hub),
    }
    pages = dashboard.blueprint()
    for route in ROUTES:
        if route.served_by is not ServedBy.QUART:
            continue
        if route.name in dashboard.VIEWS:
            view = dashboard.VIEWS[route.name]
            pages.add_url_rule(route.quart_rule, route.name, view, methods=[route.method])
        else:
            app.add_url_rule(
                route.quart_rule, route.name, views[route.name], methods=[route.method]
            )
    app.register_blueprint(pages)


def _as_felix_error(error: Exception) -> BaseException:
    # Quart raises Werkzeug's HTTP exceptions for what it refuses itself;
    # they are answered in Felix's words like every other refusal.
    status = getattr(error, "code", None)
    if not isinstance(error, FelixError) and isinstance(status, int) and 400 <= status < 500:
        return error_for_status(status)
    return error


def create_app(hub: Hub, settings: Settings | None = None) -> QuartTrio:
    """Build the app serving the contract's REST and WebSocket routes.

    The app holds no workflow state: it forwards to ``hub``, which must stay
    open while the app serves. Every scope passes through the edge
    (:class:`~felix.web.edge.Edge`) before Quart sees it.
    """
    settings = settings or hub.settings
    app = QuartTrio("felix")
    app.config.update(
        FELIX_HUB=hub,
        FELIX_SETTINGS=settings,
        # A backstop: the edge reads every body within its limit first.
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.config.update(FELIX_TOKENS=TokenSigner.from_settings(settings))
    _add_routes(app, hub, settings)

    @app.errorhandler(Exception)
    async def render(error: Exception) -> Response:
        answer = render_error(_as_felix_error(error), where=f"{request.method} {request.path}")
        headers: Any = [
            (name.decode(), value.decode())
            for name, value in answer.headers
            if name not in (b"content-length", b"content-type")
        ]
        return Response(
            answer.body, status=answer.status, headers=headers, content_type="application/json"
        )

    quart_app: ASGIApp = app.asgi_app  # type: ignore[assignment]
    edge = Edge(hub, settings, close_http_connections(quart_app, settings.send_timeout))
    app.asgi_app = edge  # type: ignore[method-assign,assignment]
    return app


def _served_inline() -> Callable[[bytes, bytes], bool]:
    """Which requests the adapter may serve in their connection's own task.

    The HTTP routes the edge answers itself without streaming (the publish
    route): they answer promptly, so the connection has nothing to read
    meanwhile. A percent-encoded path takes the ordinary path.
    """
    inline = [
        (route.method.encode(), route.pattern)
        for route in ROUTES
        if route.served_by is ServedBy.EDGE and not route.websocket and not route.stream
    ]

    def admits(method: bytes, target: bytes) -> bool:
        path = target.partition(b"?")[0]
        if b"%" in path:
            return False
        text = path.decode("ascii")
        return any(method == wanted and pattern.fullmatch(text) for wanted, pattern in inline)

    return admits


def hypercorn_config(settings: Settings) -> FelixConfig:
    """The Hypercorn configuration Felix runs with (and its fixes read)."""
    config = FelixConfig.from_settings(settings)
    # A WebSocket route that reads publishes (the producer stream) takes
    # messages as large as its body limit; the others keep FELIX_MAX_CLIENT_FRAME_BYTES.
    config.felix_message_limits = {
        route.path: getattr(settings, route.body_limit)
        for route in ROUTES
        if route.websocket and route.body_limit is not None and not route.parameters
    }
    config.felix_inline = _served_inline()
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

    # Hypercorn calls the edge itself, not Quart.__call__ (which only calls
    # asgi_app): one frame less held by every open WebSocket.
    await hypercorn.trio.serve(
        app.asgi_app, config, shutdown_trigger=trigger, task_status=task_status
    )
