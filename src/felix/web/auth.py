"""API-key checks shared by the REST and WebSocket edges.

Every configured key is compared, in constant time, whatever the input, so a
wrong key and a missing key take the same path and the same time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from felix._errors import AuthenticationError

__all__ = ["check_api_key", "key_from_headers"]


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from ``Authorization: Bearer K`` or ``X-API-Key: K``, if any."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"x-api-key":
            return value.decode("latin-1").strip()
        if lowered == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


def check_api_key(keys: tuple[str, ...], presented: str | None) -> None:
    """Raise :class:`AuthenticationError` unless ``presented`` is one of ``keys``.

    With no keys configured (development mode) everything passes.
    """
    if not keys:
        return
    candidate = (presented or "").encode()
    matched = False
    for key in keys:
        # No short-circuit: every key is compared whatever matched before.
        matched |= hmac.compare_digest(candidate, key.encode())
    if not matched or presented is None:
        raise AuthenticationError("missing or invalid API key")
