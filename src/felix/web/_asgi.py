"""ASGI type aliases (loose on purpose: the messages are plain dicts) and the
one way Felix's plain ASGI handlers answer with the contract's JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from felix._core.events import encode
from felix._errors import FelixError

Scope: TypeAlias = dict[str, Any]
Message: TypeAlias = dict[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    *,
    retry_after: int | None = None,
    websocket: bool = False,
) -> None:
    """Answer with a JSON body; ``websocket`` refuses a handshake the same way."""
    body = encode(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    prefix = "websocket.http.response" if websocket else "http.response"
    await send({"type": f"{prefix}.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body})


async def send_error(send: Send, error: FelixError, *, websocket: bool = False) -> None:
    """Answer with the error's status, its contract body and any ``Retry-After``."""
    await send_json(
        send,
        error.http_status,
        error.to_json(),
        retry_after=getattr(error, "retry_after", None),
        websocket=websocket,
    )
