"""The one bounded body reader, used by every route that takes a body.

A body announced larger than the limit (``Content-Length``) is refused
*before* ``receive()`` is called: Hypercorn sends ``100 Continue`` on the first
``receive()`` of a request whose client waits for it, so a body that will be
refused is never invited. A body without a length (chunked) is counted as it
arrives and refused as soon as it passes the limit; nothing over the limit is
ever held.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from felix._errors import BadRequest, EventTooLarge
from felix.web._asgi import Receive

__all__ = ["MAX_LENGTH_DIGITS", "content_length", "read_body"]

#: A Content-Length with more digits than this is over any limit Felix can have.
MAX_LENGTH_DIGITS: Final = 18


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length``, or None; a huge one is returned as a huge int.

    Hypercorn (h11) has already refused malformed and conflicting lengths.
    """
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return None
            if len(text.lstrip(b"0")) > MAX_LENGTH_DIGITS:
                return 10**MAX_LENGTH_DIGITS
            return int(text)
    return None


async def read_body(receive: Receive, headers: Iterable[tuple[bytes, bytes]], limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes.

    Raises :class:`~felix._errors.EventTooLarge` (413) — before reading
    anything when ``Content-Length`` is over the limit, else as soon as the
    bytes read pass it — and :class:`~felix._errors.BadRequest` (400) when
    the client leaves before its body ends.
    """
    announced = content_length(headers)
    if announced is not None and announced > limit:
        shown = announced if announced < 10**MAX_LENGTH_DIGITS else "over 10^18"
        raise EventTooLarge(f"request body is {shown} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before sending its body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise EventTooLarge(f"request body is over {limit} bytes, the limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
