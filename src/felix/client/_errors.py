"""The errors :mod:`felix.client` raises on purpose, and how a network failure is named.

Everything the client raises on purpose is a :class:`ClientError`: an
:class:`ApiError` for a REST error answer, :class:`ConnectionFailed` when the
server cannot be reached over HTTP, and a :class:`StreamError` when a stream
cannot go on (:class:`StreamRefused` for a handshake that retrying cannot fix,
:class:`ReconnectFailed` when the reconnection budget runs out).
"""

from __future__ import annotations

import errno as errno_codes
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio

__all__ = [
    "ApiError",
    "ClientError",
    "ConnectionFailed",
    "ReconnectFailed",
    "StreamError",
    "StreamNotFound",
    "StreamRefused",
    "StreamUnauthorized",
    "broken_as_os_error",
    "os_reason",
]


class ClientError(Exception):
    """Base of every error :mod:`felix.client` raises on purpose.

    ``str(error)`` is one line meant for people; it never holds a key or a token.
    """


class ConnectionFailed(ClientError):
    """The server could not be reached over HTTP: refused, unknown host, timeout,
    or a connection broken mid-request. ``reason`` is the short cause."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(ClientError):
    """The REST API answered with an error status.

    ``status`` is the HTTP status, ``error`` the contract's error code (for
    example ``workflow_not_found``), ``message`` the server's human text and
    ``body`` the whole JSON body (a 422 for a batch carries ``index``).
    """

    def __init__(self, status: int, error: str, message: str, body: Mapping[str, Any]) -> None:
        super().__init__(f"{message} (HTTP {status} {error})")
        self.status = status
        self.error = error
        self.message = message
        self.body = dict(body)


class StreamError(ClientError):
    """A workflow stream cannot go on. Raised from ``async for`` over the stream."""


class StreamRefused(StreamError):
    """The server refused the WebSocket handshake for a reason retrying cannot fix
    (400, 403, any 4xx but 408 and 429). Carries the server's answer like
    :class:`ApiError`: ``status``, ``error``, ``message``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {error})")
        self.status = status
        self.error = error
        self.message = message


class StreamUnauthorized(StreamRefused):
    """401 at the handshake: the API key or token is missing, wrong or expired."""


class StreamNotFound(StreamRefused):
    """404 at the handshake: no such workflow, or it has passed its retention period."""


class ReconnectFailed(StreamError):
    """The reconnection budget ran out (:attr:`Backoff.max_attempts` failures in a
    row, or :attr:`Backoff.max_elapsed` seconds since the first of them).

    ``attempts`` and ``elapsed`` say how far it went; ``last_error`` is the
    cause of the last failure (``"connection refused"``, ``"closed with 1011
    (internal error)"``…).
    """

    def __init__(self, url: str, attempts: int, elapsed: float, last_error: str) -> None:
        super().__init__(
            f"gave up reconnecting to {url} after {attempts} failed attempt"
            f"{'s' if attempts != 1 else ''} in {elapsed:.1f} s; last error: {last_error}"
        )
        self.url = url
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


@contextmanager
def broken_as_os_error() -> Iterator[None]:
    """Raise anyio's :class:`~anyio.BrokenResourceError` (a reset or a broken pipe
    while connecting) as the :class:`OSError` the reconnect loops retry on."""
    try:
        yield
    except anyio.BrokenResourceError as error:
        cause = error.__cause__
        if isinstance(cause, OSError):
            raise cause from error
        raise OSError("the connection broke during the handshake") from error


def os_reason(error: BaseException) -> str:
    """A short cause for a network failure: ``connection refused``, ``name or
    service not known``…, found wherever it sits in the exception's chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    first: BaseException | None = None
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno == errno_codes.ECONNREFUSED:
                return "connection refused"
            return (current.strerror or os.strerror(current.errno)).lower()
        if isinstance(current, OSError) and first is None and str(current):
            first = current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    if first is not None:
        return str(first)
    return str(error) or type(error).__name__
