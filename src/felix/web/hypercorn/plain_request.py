"""Recognise a plain HTTP/1.1 request that may skip h11, and write its answer.

Sans-IO helpers for section 7 of :mod:`felix.web.hypercorn.h11_protocol`: a
request that arrived whole in one read, in the simplest form RFC 9112 allows
(origin-form target, ``HTTP/1.1``, one ``Host``, at most one
``Content-Length`` and no other framing, only visible ASCII), is served
without h11's state machine. Anything else — every malformed, unusual or
incomplete request — is left to h11, which answers errors as before:
:func:`parse_plain_request` returns None rather than deciding anything
itself, so it can only ever take the common case, never refuse one.

Written against h11 0.16.0 (whose rules these are a strict subset of).
Delete with section 7 of ``h11_protocol``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

__all__ = ["PlainRequest", "parse_plain_request", "response_bytes"]

# RFC 9110 §5.6.2 token; the request target: origin-form, visible ASCII only.
_REQUEST_LINE: Final = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*) HTTP/1\.1")
# A field line with visible-ASCII value (no obs-fold, no obs-text, no controls).
_FIELD: Final = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?)[ \t]*"
)
#: Headers that change a request's framing or its connection: h11 handles them.
_NOT_PLAIN: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"connection"})
_MAX_LENGTH_DIGITS: Final = 18


@attrs.frozen
class PlainRequest:
    """A whole request, parsed: method, target, lower-cased headers and body."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def request_line(data: bytes) -> tuple[bytes, bytes] | None:
    """The method and target of ``data``'s plain request line, or None."""
    end = data.find(b"\r\n")
    found = _REQUEST_LINE.fullmatch(data, 0, end) if end > 0 else None
    return None if found is None else (found[1], found[2])


def parse_plain_request(
    data: bytes, max_head: int, line: tuple[bytes, bytes] | None = None
) -> PlainRequest | None:
    """``data`` as one whole plain request with nothing after it, or None.

    None means "let h11 decide": an incomplete, pipelined, malformed or
    merely unusual request (chunked, ``Expect``, ``Connection``, upgrades,
    HTTP/1.0, obs-fold, non-ASCII) all give None. ``line`` is
    :func:`request_line`'s answer for ``data`` when the caller has it already.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0 or head_end > max_head:
        return None
    line = line or request_line(data)
    if line is None:
        return None
    headers = _fields(data, data.find(b"\r\n") + 2, head_end)
    if headers is None:
        return None
    length = _content_length(headers)
    body = data[head_end + 4 :]
    if length is None or len(body) != length:
        return None
    return PlainRequest(line[0], line[1], headers, body)


def _fields(data: bytes, start: int, end: int) -> list[tuple[bytes, bytes]] | None:
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    while start < end:
        stop = data.find(b"\r\n", start, end)
        stop = end if stop < 0 else stop
        found = _FIELD.fullmatch(data, start, stop)
        if found is None:
            return None
        name = found[1].lower()
        # "Connection: keep-alive" (HTTP/1.1's default anyway) is what many
        # clients send on every request; any other Connection goes to h11.
        if name in _NOT_PLAIN and not (name == b"connection" and found[2].lower() == b"keep-alive"):
            return None
        hosts += name == b"host"
        headers.append((name, found[2]))
        start = stop + 2
    return headers if hosts == 1 else None


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The body's length (0 without the header); None if it is not one plain number."""
    lengths = [value for name, value in headers if name == b"content-length"]
    if not lengths:
        return 0
    if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > _MAX_LENGTH_DIGITS:
        return None
    return int(lengths[0])


def response_bytes(
    status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, *, close: bool
) -> tuple[bytes, bool] | None:
    """The whole HTTP/1.1 response as h11 would write it, and whether to close after it.

    ``Content-Length`` is the body's (an app's own must agree), and
    ``Connection: close`` is added when ``close``; an app's own
    ``Connection: close`` closes too. None where h11 would refuse the
    response or frame it otherwise: a status without a body (1xx, 204,
    304), ``Transfer-Encoding``, a bad or disagreeing header.
    """
    if status < 200 or status in (204, 304):
        return None
    lines = [b"HTTP/1.1 %d \r\n" % status]
    length = str(len(body)).encode()
    has_length = False
    for raw_name, raw_value in headers:
        name, value = bytes(raw_name).strip().lower(), bytes(raw_value).strip()
        if not _FIELD.fullmatch(name + b": " + value) or name == b"transfer-encoding":
            return None
        if name == b"content-length":
            if value != length or has_length:
                return None
            has_length = True
        elif name == b"connection" and b"close" in value.lower():
            close, value = True, b"close"  # written once, below
            continue
        lines.append(name + b": " + value + b"\r\n")
    if not has_length:
        lines.append(b"content-length: " + length + b"\r\n")
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines), close
