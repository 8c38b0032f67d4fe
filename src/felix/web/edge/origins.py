"""Origins as browsers send them, and whether one names the server a request reached.

Shared by the WebSocket origin check (``felix.web.ws``) and the dashboard
session's same-origin rule (``felix.web.session``), so both read an
``Origin`` header the same way.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORTS", "Origin", "names_host", "parse_origin"]

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
