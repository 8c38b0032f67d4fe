"""The one error renderer: every refusal Felix makes, as the contract's JSON.

:func:`render_error` turns any exception into an :class:`Answer` — a status,
headers and the ``{"error", "message"}`` body encoded by Felix's one encoder
(:func:`felix._core.events.encode`):

- a :class:`~felix._errors.FelixError`: its status, its body, ``Retry-After``
  when it has ``retry_after``, ``Allow`` for :class:`MethodNotAllowed`;
- anything else: 500 ``internal_error``, logged here, once, with its traceback.

Quart's error handlers (``felix.web.app``) and the edge's plain ASGI handlers
(:func:`send_error`) both answer through it, so no route words an error its
own way. Text quoted from a request goes through :func:`quote`, which cuts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import attrs

from felix._core.events import encode
from felix._errors import BadRequest, EventTooLarge, FelixError, quote
from felix.web._asgi import Send

__all__ = [
    "INTERNAL_ERROR",
    "Answer",
    "MethodNotAllowed",
    "RouteNotFound",
    "error_for_status",
    "json_answer",
    "quote",
    "render_error",
    "send_answer",
    "send_error",
]

logger = logging.getLogger("felix.web")

#: How much of a client's input an error message quotes.


class RouteNotFound(FelixError):
    """No route has this path (404)."""

    http_status = 404
    code = "not_found"


class MethodNotAllowed(FelixError):
    """Routes have this path, but none this method (405, with ``Allow``)."""

    http_status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...], route: Any = None) -> None:
        super().__init__(message)
        self.allow = allow
        #: A route at this path: its policy authenticates the refused request.
        self.route = route


@attrs.frozen
class Answer:
    """A rendered response: status, headers (bytes pairs) and a JSON body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


#: The body of every 500: nothing about what went wrong reaches the client.
INTERNAL_ERROR: Final = {"error": "internal_error", "message": "internal server error"}


def json_answer(status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> Answer:
    """``payload`` encoded by Felix's encoder, with its content type and length."""
    body = encode(payload).encode()
    return Answer(
        status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        body,
    )


def render_error(error: BaseException, *, where: str = "") -> Answer:
    """The answer to ``error``; an unexpected one is logged (with ``where``) and is a 500."""
    if not isinstance(error, FelixError):
        logger.error("unhandled error in %s", where or "a request", exc_info=error)
        return json_answer(500, INTERNAL_ERROR)
    headers: list[tuple[bytes, bytes]] = []
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if isinstance(error, MethodNotAllowed):
        headers.append((b"allow", ", ".join(error.allow).encode()))
    return json_answer(error.http_status, error.to_json(), headers)


def error_for_status(status: int) -> FelixError:
    """A refusal of a framework's (Quart's) own, by status, in Felix's words."""
    if status == 404:
        return RouteNotFound("no such route")
    if status == 413:
        return EventTooLarge("the request body is over the limit")
    return BadRequest("the request cannot be understood")


async def send_answer(send: Send, answer: Answer, *, websocket: bool = False) -> None:
    """Send ``answer`` over ASGI; ``websocket`` refuses a handshake with it."""
    prefix = "websocket.http.response" if websocket else "http.response"
    await send({"type": f"{prefix}.start", "status": answer.status, "headers": answer.headers})
    await send({"type": f"{prefix}.body", "body": answer.body})


async def send_error(
    send: Send, error: BaseException, *, websocket: bool = False, where: str = ""
) -> None:
    """:func:`render_error` and :func:`send_answer` in one call."""
    await send_answer(send, render_error(error, where=where), websocket=websocket)
