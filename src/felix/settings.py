"""Every ``FELIX_*`` setting, in one attrs class.

``Settings()`` gives the defaults; :meth:`Settings.from_env` reads the
environment through :data:`ENVIRONMENT`. ``docs/reference/configuration.md``
documents the same table, and ``tests/test_docs.py`` keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from felix._errors import quote

__all__ = ["ENVIRONMENT", "Settings", "SettingsError"]

KIB = 1024
MIB = 1024 * 1024
#: Shortest token secret accepted: shorter ones could be guessed from a token.
MIN_SECRET_LENGTH = 16
#: Longest FELIX_TOKEN_MAX_TTL: subscribe tokens are meant to be short-lived.
MAX_TOKEN_TTL = 366 * 24 * 3600
#: Highest FELIX_MAX_JSON_DEPTH: Python's JSON encoder and parser recurse once
#: per level, within a stack of about 1000 frames that the server's own
#: frames share, so deeper documents could not be read back reliably.
MAX_JSON_DEPTH_CEILING = 256


def _broker(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value != "memory" and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
        raise SettingsError(
            f"{attribute.name} must be memory or a redis://, rediss:// or unix:// URL, "
            f"got {quote(value)}"
        )


class SettingsError(ValueError):
    """A ``FELIX_*`` variable that cannot be parsed; the message names it."""


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise SettingsError(f"{attribute.name} must be positive, got {value}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise SettingsError(f"{attribute.name} must be 0 (off) or positive, got {value}")


def _secrets(_instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    # The message never repeats a secret.
    if any(len(secret) < MIN_SECRET_LENGTH for secret in value):
        raise SettingsError(
            f"{attribute.name} must each be at least {MIN_SECRET_LENGTH} characters long"
        )


def _token_max_ttl(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not instance.token_ttl <= value <= MAX_TOKEN_TTL:
        raise SettingsError(
            f"{attribute.name} must be between token_ttl ({instance.token_ttl}) and "
            f"{MAX_TOKEN_TTL} (a year), got {value}"
        )


def _origins(_instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for origin in value:
        if origin != "*" and not _is_origin(origin):
            raise SettingsError(
                f"{attribute.name} takes full origins such as https://app.example.com, or *; "
                f"got {quote(origin)}"
            )


def _is_origin(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and parts.path in {"", "/"}
        and not parts.query
        and not parts.fragment
        and parts.username is None
        and parts.password is None
    )


def _json_depth(_instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_JSON_DEPTH_CEILING:
        raise SettingsError(
            f"{attribute.name} must be between 1 and {MAX_JSON_DEPTH_CEILING}, got {value}"
        )


def _log_format(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("text", "json"):
        raise SettingsError(f"{attribute.name} must be text or json, got {quote(value)}")


@attrs.frozen(kw_only=True)
class Settings:
    """Server settings. Every limit here bounds a buffer, a map or a wait."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Accepted API keys; empty means development mode (no authentication).
    api_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    #: Events kept per workflow for replay; the oldest is dropped beyond it.
    history_size: int = attrs.field(default=1000, validator=_positive)
    #: Bytes of events kept per workflow for replay; the oldest are dropped beyond.
    history_bytes: int = attrs.field(default=8 * MIB, validator=_positive)
    #: Bytes of events kept for replay by all workflows of this server together;
    #: beyond, the oldest go first, of finished workflows before running ones.
    history_budget_bytes: int = attrs.field(default=512 * MIB, validator=_positive)
    #: Seconds a finished workflow stays readable before it is forgotten.
    retention_seconds: float = attrs.field(default=3600.0, validator=_positive)
    #: Workflows held at once (finished ones count until forgotten); 503 beyond.
    max_workflows: int = attrs.field(default=10_000, validator=_positive)
    #: Agents tracked per workflow in its derived state; 422 beyond.
    max_agents_per_workflow: int = attrs.field(default=1000, validator=_positive)
    #: Largest event, encoded with its envelope, in bytes; 413 beyond.
    max_event_bytes: int = attrs.field(default=64 * KIB, validator=_positive)
    #: Deepest nesting of arrays and objects in any JSON received; 422 beyond.
    max_json_depth: int = attrs.field(default=64, validator=_json_depth)
    #: Most events in one batch; 413 beyond.
    max_batch_events: int = attrs.field(default=1000, validator=_positive)
    #: Largest REST request body in bytes; 413 beyond.
    max_body_bytes: int = attrs.field(default=1 * MIB, validator=_positive)
    #: Largest message a WebSocket client may send, in bytes; close 1009 beyond.
    max_client_frame_bytes: int = attrs.field(default=64 * KIB, validator=_positive)
    #: Bytes queued for one subscriber before it is closed with 4008.
    subscriber_buffer_bytes: int = attrs.field(default=1 * MIB, validator=_positive)
    #: Frames queued for one subscriber before it is closed with 4008.
    subscriber_buffer_frames: int = attrs.field(default=10_000, validator=_positive)
    #: Commands waiting in one workflow actor's inbox before publishers wait.
    inbox_size: int = attrs.field(default=256, validator=_positive)
    #: Seconds a publish waits for room in a full inbox before 503.
    publish_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Open WebSocket connections in total; 503 at the handshake beyond.
    max_connections: int = attrs.field(default=10_000, validator=_positive)
    #: Open WebSocket connections per workflow; 503 at the handshake beyond.
    max_connections_per_workflow: int = attrs.field(default=1000, validator=_positive)
    #: Seconds between server pings on each WebSocket.
    ping_interval: float = attrs.field(default=20.0, validator=_positive)
    #: Seconds to wait for any answer to a ping before dropping the peer.
    ping_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Milliseconds an ``EventSource`` waits before reconnecting (the SSE ``retry:``).
    sse_retry_ms: int = attrs.field(default=3000, validator=_positive)
    #: Seconds one socket write may take before the connection is aborted.
    send_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Negotiate permessage-deflate when a client offers it.
    ws_compression: bool = False
    #: Seconds open connections get to drain before shutdown closes them.
    shutdown_grace: float = attrs.field(default=5.0, validator=_positive)
    #: Seconds an idle keep-alive HTTP connection stays open.
    keep_alive_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Logging level name for Felix and Hypercorn.
    log_level: str = "INFO"
    #: Write Hypercorn's access log (redacted) to standard output.
    access_log: bool = False
    #: Secrets that sign subscribe tokens (the first signs, all verify). Empty:
    #: derived from the API keys, or random per process in development mode.
    token_secrets: tuple[str, ...] = attrs.field(default=(), repr=False, validator=_secrets)
    #: Default lifetime of a subscribe token, in seconds.
    token_ttl: int = attrs.field(default=300, validator=_positive)
    #: Longest lifetime a token request may ask for, in seconds; 422 beyond.
    token_max_ttl: int = attrs.field(default=3600, validator=[_positive, _token_max_ttl])
    #: Origins a browser WebSocket may come from (``*``: any). Empty: same origin
    #: only when an API key is set, any origin in development mode.
    allowed_origins: tuple[str, ...] = attrs.field(default=(), validator=_origins)
    #: Publishes per second per client address and per key; 0 turns the limit off.
    rate_publish: float = attrs.field(default=0.0, validator=_non_negative)
    #: Publishes a client may make at once before ``rate_publish`` applies.
    rate_publish_burst: int = attrs.field(default=100, validator=_positive)
    #: WebSocket handshakes per second per client address and per credential; 0: off.
    rate_handshake: float = attrs.field(default=0.0, validator=_non_negative)
    #: Handshakes a client may make at once before ``rate_handshake`` applies.
    rate_handshake_burst: int = attrs.field(default=20, validator=_positive)
    #: Clients each rate limiter remembers; the least recently seen is forgotten beyond.
    rate_max_clients: int = attrs.field(default=10_000, validator=_positive)
    #: Log line format: ``text`` or ``json`` (one object per line).
    log_format: str = attrs.field(default="text", validator=_log_format)
    #: Where workflows live: ``memory`` (this process) or a Redis URL shared by nodes.
    broker: str = attrs.field(default="memory", validator=_broker, repr=False)
    #: Seconds one Redis command may take before the request answers 503.
    broker_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: Entries of the live feed every node tails; Redis trims the oldest beyond it.
    broker_feed_length: int = attrs.field(default=100_000, validator=_positive)
    #: Seconds a node keeps its copy of a workflow nobody on it watches (Redis broker).
    broker_idle_seconds: float = attrs.field(default=60.0, validator=_positive)
    #: Seconds a request body may take to arrive once its head has; 408 and close beyond.
    body_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: After refusing a request whose body is still arriving, seconds to read and
    #: discard the rest before closing (so the client reads the refusal, not a reset).
    linger_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    #: ... and at most this many bytes of it.
    linger_bytes: int = attrs.field(default=16 * MIB, validator=_non_negative)
    #: Idempotency keys each workflow remembers (the most recent applied).
    idempotency_keys: int = attrs.field(default=10_000, validator=_positive)
    #: Publishes one producer-stream connection may have in flight.
    producer_window: int = attrs.field(default=1024, validator=_positive)
    #: Bytes of frames one producer-stream connection may have in flight.
    producer_window_bytes: int = attrs.field(default=16 * MIB, validator=_positive)

    @property
    def dev_mode(self) -> bool:
        """True when no API key is configured and the server runs open."""
        return not self.api_keys

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``FELIX_*`` variables; ``overrides`` (e.g. CLI flags) win.

        Raises :class:`SettingsError` naming the variable that cannot be parsed.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, kind, _doc) in ENVIRONMENT.items():
            raw = environ.get(variable)
            if raw is None or raw == "":
                continue
            try:
                values[name] = _parse(kind, raw)
            except ValueError:
                raise SettingsError(f"{variable}={quote(raw)} is not a valid {kind}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            for name, (variable, _kind, _doc) in ENVIRONMENT.items():
                if message.startswith(f"{name} ") and name not in overrides:
                    message = f"{variable}: {message}"
            raise SettingsError(message) from None


def _parse(kind: str, raw: str) -> Any:
    if kind == "integer":
        return int(raw)
    if kind == "number":
        return float(raw)
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(raw)
    if kind == "list":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


#: setting name -> (environment variable, kind, what it does). The reference
#: table in the docs is this table.
ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    "host": ("FELIX_HOST", "string", "Address to listen on (`felix serve --host`)."),
    "port": ("FELIX_PORT", "integer", "Port to listen on (`felix serve --port`)."),
    "api_keys": (
        "FELIX_API_KEY",
        "list",
        "API key, or several separated by commas (all valid, for rotation). Unset: open "
        "development mode, announced once at start.",
    ),
    "history_size": (
        "FELIX_HISTORY_SIZE",
        "integer",
        "Events kept per workflow for replay (`after=`); the oldest is dropped beyond it.",
    ),
    "history_bytes": (
        "FELIX_HISTORY_BYTES",
        "integer",
        "Bytes of events kept per workflow for replay, counted as each event's encoded "
        "frame plus 320 bytes; the oldest are dropped beyond it (a resume that "
        "needed them gets `recovered: false`).",
    ),
    "history_budget_bytes": (
        "FELIX_HISTORY_BUDGET_BYTES",
        "integer",
        "Bytes of events kept for replay by all workflows of this server (of this node, "
        "with a broker) together; beyond it the oldest retained events go first, those of "
        "finished workflows before those of running ones.",
    ),
    "retention_seconds": (
        "FELIX_RETENTION_SECONDS",
        "number",
        "Seconds a finished workflow stays readable; then it is forgotten (404).",
    ),
    "max_workflows": (
        "FELIX_MAX_WORKFLOWS",
        "integer",
        "Workflows held at once, finished ones included until forgotten; create answers 503 "
        "beyond.",
    ),
    "max_agents_per_workflow": (
        "FELIX_MAX_AGENTS_PER_WORKFLOW",
        "integer",
        "Agents tracked in one workflow's state; an event adding one more answers 422.",
    ),
    "max_event_bytes": (
        "FELIX_MAX_EVENT_BYTES",
        "integer",
        "Largest event, encoded with its envelope, in bytes; 413 beyond.",
    ),
    "max_json_depth": (
        "FELIX_MAX_JSON_DEPTH",
        "integer",
        "Deepest nesting of arrays and objects in any JSON received (request bodies, "
        "producer frames, WebSocket commands, and events or metadata handed to an embedded "
        "hub); 422 beyond. At most 256.",
    ),
    "max_batch_events": (
        "FELIX_MAX_BATCH_EVENTS",
        "integer",
        "Most events in one batch; 413 beyond.",
    ),
    "max_body_bytes": (
        "FELIX_MAX_BODY_BYTES",
        "integer",
        "Largest request body in bytes; 413 beyond.",
    ),
    "max_client_frame_bytes": (
        "FELIX_MAX_CLIENT_FRAME_BYTES",
        "integer",
        "Largest message a subscriber's WebSocket may send, in bytes (the producer stream "
        "takes up to FELIX_MAX_BODY_BYTES); the server closes with 1009 "
        "beyond.",
    ),
    "subscriber_buffer_bytes": (
        "FELIX_SUBSCRIBER_BUFFER_BYTES",
        "integer",
        "Bytes of live events queued for one connection; beyond, it is closed with 4008.",
    ),
    "subscriber_buffer_frames": (
        "FELIX_SUBSCRIBER_BUFFER_FRAMES",
        "integer",
        "Frames queued for one connection; beyond, it is closed with 4008.",
    ),
    "inbox_size": (
        "FELIX_INBOX_SIZE",
        "integer",
        "Commands waiting in one workflow's inbox; publishers wait when it is full.",
    ),
    "publish_timeout": (
        "FELIX_PUBLISH_TIMEOUT",
        "number",
        "Seconds a publish waits for room in a full inbox; then 503 with Retry-After.",
    ),
    "max_connections": (
        "FELIX_MAX_CONNECTIONS",
        "integer",
        "Open WebSocket connections in total; the handshake answers 503 beyond.",
    ),
    "max_connections_per_workflow": (
        "FELIX_MAX_CONNECTIONS_PER_WORKFLOW",
        "integer",
        "Open WebSocket connections per workflow; the handshake answers 503 beyond.",
    ),
    "ping_interval": (
        "FELIX_PING_INTERVAL",
        "number",
        "Seconds between server pings on each WebSocket, and between the : ping comments "
        "on each Server-Sent Events stream.",
    ),
    "ping_timeout": (
        "FELIX_PING_TIMEOUT",
        "number",
        "Seconds to wait for any answer to a ping; a silent peer is dropped, so a dead one "
        "goes within FELIX_PING_INTERVAL + FELIX_PING_TIMEOUT.",
    ),
    "sse_retry_ms": (
        "FELIX_SSE_RETRY_MS",
        "integer",
        "Milliseconds a browser's EventSource waits before it reconnects to a Server-Sent "
        "Events stream that ended (sent as the stream's first line, retry:).",
    ),
    "send_timeout": (
        "FELIX_SEND_TIMEOUT",
        "number",
        "Seconds one socket write may take; a client that stops reading is then disconnected "
        "(TCP reset).",
    ),
    "ws_compression": (
        "FELIX_WS_COMPRESSION",
        "boolean",
        "Negotiate permessage-deflate when a client offers it (costs a zlib pass per message "
        "per subscriber; off by default).",
    ),
    "shutdown_grace": (
        "FELIX_SHUTDOWN_GRACE",
        "number",
        "Seconds connections get to drain on SIGTERM/SIGINT before they are closed with 1001.",
    ),
    "keep_alive_timeout": (
        "FELIX_KEEP_ALIVE_TIMEOUT",
        "number",
        "Seconds an idle keep-alive HTTP connection stays open.",
    ),
    "log_level": ("FELIX_LOG_LEVEL", "string", "Logging level: DEBUG, INFO, WARNING, ERROR."),
    "access_log": (
        "FELIX_ACCESS_LOG",
        "boolean",
        "Write an access log line per request to standard output (keys and tokens redacted).",
    ),
    "token_secrets": (
        "FELIX_TOKEN_SECRET",
        "list",
        "Secret that signs subscribe tokens, or several separated by commas (the first signs, "
        "all verify), each at least 16 characters. Unset: derived from FELIX_API_KEY; with "
        "no key either, random per process.",
    ),
    "token_ttl": (
        "FELIX_TOKEN_TTL",
        "integer",
        "Seconds a subscribe token lives when the request does not say.",
    ),
    "token_max_ttl": (
        "FELIX_TOKEN_MAX_TTL",
        "integer",
        "Longest lifetime, in seconds, a token request may ask for; 422 beyond.",
    ),
    "allowed_origins": (
        "FELIX_ALLOWED_ORIGINS",
        "list",
        "Origins browser WebSockets may come from, comma-separated (https://app.example.com; "
        "`*` for any). Unset: same origin only when a key is set, any in development mode.",
    ),
    "rate_publish": (
        "FELIX_RATE_PUBLISH",
        "number",
        "Publishes per second per client address and per key (0: no limit); 429 beyond.",
    ),
    "rate_publish_burst": (
        "FELIX_RATE_PUBLISH_BURST",
        "integer",
        "Publishes a client may make at once before FELIX_RATE_PUBLISH applies.",
    ),
    "rate_handshake": (
        "FELIX_RATE_HANDSHAKE",
        "number",
        "WebSocket handshakes per second per client address and per credential (0: no "
        "limit); 429 beyond.",
    ),
    "rate_handshake_burst": (
        "FELIX_RATE_HANDSHAKE_BURST",
        "integer",
        "Handshakes a client may make at once before FELIX_RATE_HANDSHAKE applies.",
    ),
    "rate_max_clients": (
        "FELIX_RATE_MAX_CLIENTS",
        "integer",
        "Clients each rate limiter remembers; beyond, the least recently seen is forgotten.",
    ),
    "log_format": (
        "FELIX_LOG_FORMAT",
        "string",
        "Log line format: text, or json (one object per line with time, level, logger, "
        "message, and request_id / connection_id when known).",
    ),
    "broker": (
        "FELIX_BROKER",
        "string",
        "`memory` (the default: workflows live in this process) or a Redis URL such as "
        "redis://127.0.0.1:6379/0, shared by every node (`felix serve --broker`).",
    ),
    "broker_timeout": (
        "FELIX_BROKER_TIMEOUT",
        "number",
        "Seconds one Redis command may take; the request then answers 503 broker_unavailable.",
    ),
    "broker_feed_length": (
        "FELIX_BROKER_FEED_LENGTH",
        "integer",
        "Entries of the live feed stream every node tails; Redis trims the oldest beyond it "
        "(a node further behind catches up from each workflow's own stream).",
    ),
    "broker_idle_seconds": (
        "FELIX_BROKER_IDLE_SECONDS",
        "number",
        "Seconds a node keeps its local copy of a workflow that nobody on it watches.",
    ),
    "body_timeout": (
        "FELIX_BODY_TIMEOUT",
        "number",
        "Seconds a request body may take to arrive once its head has; beyond, the request "
        "is answered 408 request_timeout and the connection closed.",
    ),
    "linger_seconds": (
        "FELIX_LINGER_SECONDS",
        "number",
        "After a refusal sent while the request body is still arriving (413, 401, 404, 429), "
        "seconds the server reads and discards the rest before closing, so the client reads "
        "the refusal instead of a connection reset.",
    ),
    "linger_bytes": (
        "FELIX_LINGER_BYTES",
        "integer",
        "The most bytes of a refused request body read and discarded that way.",
    ),
    "idempotency_keys": (
        "FELIX_IDEMPOTENCY_KEYS",
        "integer",
        "Idempotency keys each workflow remembers, the most recently applied; a repeat of an "
        "older key is applied again. Kept as long as the workflow, its retention included.",
    ),
    "producer_window": (
        "FELIX_PRODUCER_WINDOW",
        "integer",
        "Publishes one producer-stream connection may have in flight (read, not yet "
        "answered); the server stops reading the connection beyond it.",
    ),
    "producer_window_bytes": (
        "FELIX_PRODUCER_WINDOW_BYTES",
        "integer",
        "Bytes the frames in flight on one producer-stream connection may hold together "
        "(one frame always fits); the server stops reading the connection beyond it.",
    ),
}
