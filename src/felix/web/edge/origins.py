"""Origins as browsers send them, and whether one names the server a request reached.

Shared by the WebSocket origin check (``felix.web.edge.app``) and the dashboard
session's same-origin rule (``felix.web.edge.session``), so both read an
``Origin`` header the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from felix._errors import OriginNotAllowed
from felix.web.edge.errors import quote

__all__ = [
    "DEFAULT_PORTS",
    "Origin",
    "allowed_origins",
    "check_origin",
    "names_host",
    "parse_origin",
]

#: The port an origin of each scheme has when it names none.
DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: ``(scheme, host, port)``, the port filled in from the scheme when absent.
Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """``(scheme, host, port)`` of an origin such as ``https://app.example.com``, or None.

    None for anything that is not a bare origin: a path, query, fragment or
    credentials, an unknown scheme, no host, a bad port.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        scheme not in DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in {"", "/"}
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def names_host(origin: Origin, host: str) -> bool:
    """Whether ``origin`` names the host and port of a ``Host`` header.

    The scheme is not compared (behind a proxy terminating TLS, Felix sees
    ``http``); a ``Host`` without a port has the origin scheme's default.
    """
    try:
        parts = urlsplit(f"//{host.strip()}")
        port = parts.port
    except ValueError:
        return False
    scheme, hostname, origin_port = origin
    return (parts.hostname, port or DEFAULT_PORTS[scheme]) == (hostname, origin_port)


def allowed_origins(allowed: tuple[str, ...], *, dev_mode: bool) -> frozenset[Origin] | None:
    """The origins FELIX_ALLOWED_ORIGINS allows: None for any, empty for this server's own."""
    if "*" in allowed or (not allowed and dev_mode):
        return None
    return frozenset(origin for origin in map(parse_origin, allowed) if origin is not None)


def check_origin(origins: frozenset[Origin] | None, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise :class:`~felix._errors.OriginNotAllowed` (403) for a browser origin not allowed.

    Only browsers send ``Origin``; a request without one passes. An empty
    ``origins`` allows only an origin naming the host the request reached.
    """
    if origins is None:
        return
    pairs = list(headers)
    host = next((v.decode("latin-1") for n, v in pairs if n.lower() == b"host"), "")
    for name, value in pairs:
        if name.lower() != b"origin":
            continue
        text = value.decode("latin-1")
        origin = parse_origin(text)
        if origin is None or not (origin in origins if origins else names_host(origin, host)):
            raise OriginNotAllowed(
                f"origin {quote(text)} may not open this route; see FELIX_ALLOWED_ORIGINS"
            )
