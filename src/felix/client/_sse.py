"""Server-Sent Events on httpx: the URL, and the events of a response, parsed.

The contract's SSE routes carry the same frames as the WebSocket: ``event:``
names the type, ``data:`` is the one-line JSON object, and the stream ends
with ``event: close`` holding the WebSocket close code. Parsing is a few
lines over :meth:`httpx.Response.aiter_lines` (which splits on every line
ending SSE allows), so no SSE library is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from felix.client._errors import StreamError

__all__ = ["bounded_body", "sse_events", "sse_url"]

_HTTP_SCHEMES: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
#: The most bytes of a refusal's body read (the contract's JSON error is far smaller).
_MAX_ERROR_BODY: Final = 64 * 1024


def sse_url(websocket_url: str) -> str:
    """The SSE route mirroring a workflow's WebSocket route."""
    parts = urlsplit(websocket_url)
    path = parts.path.replace("/api/v1/ws/", "/api/v1/sse/", 1)
    return urlunsplit((_HTTP_SCHEMES[parts.scheme], parts.netloc, path, "", ""))


async def bounded_body(response: httpx.Response) -> bytes:
    """At most 64 KiB of a response's body (an error answer)."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _MAX_ERROR_BODY:
            break
    return body[:_MAX_ERROR_BODY]


async def sse_events(
    response: httpx.Response, max_message_size: int
) -> AsyncIterator[tuple[str, str]]:
    """``(event name, data)`` for each event of a ``text/event-stream`` body.

    Comments (``: ping``), ``id:`` and ``retry:`` lines are skipped: the
    stream resumes from the seq in the data, which is what ``id`` holds.
    Raises :class:`StreamError` for an event whose data passes
    ``max_message_size`` characters.
    """
    kind = "message"
    data: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data, size = "message", [], 0
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            size += len(value)
            if size > max_message_size:
                raise StreamError(
                    f"an event was larger than max_message_size={max_message_size} "
                    "bytes; raise it to follow this workflow"
                )
            data.append(value)
