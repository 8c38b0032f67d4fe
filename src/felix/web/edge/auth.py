"""API-key checks shared by the REST and WebSocket edges.

Every configured key is compared, in constant time, whatever the input, so a
wrong key and a missing key take the same path and the same time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from felix._errors import AuthenticationError

__all__ = ["check_api_key", "key_from_headers"]


def key_from_headers(
    headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]],
) -> str | None:
    """The key from ``Authorization: Bearer K`` or ``X-API-Key: K``, if any.

    Takes ASGI's raw ``(bytes, bytes)`` pairs or a framework's ``(str, str)``.
    """
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        lowered = name.lower()
        if lowered == "x-api-key":
            return value.strip()
        if lowered == "authorization":
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


def check_api_key(keys: tuple[str, ...], presented: str | None) -> int | None:
    """Raise :class:`AuthenticationError` unless ``presented`` is one of ``keys``.

    Returns the index of the matching key (a name for it that is not the
    key, for per-key rate limits), or None in development mode (no keys
    configured), where everything passes.
    """
    if not keys:
        return None
    # Digests of equal length, so that not even the key's length shows in the
    # time compare_digest takes.
    candidate = _digest(presented or "")
    matched: int | None = None
    for index, key in enumerate(keys):
        # No short-circuit: every key is compared whatever matched before.
        if hmac.compare_digest(candidate, _digest(key)) and matched is None:
            matched = index
    if matched is None or presented is None:
        raise AuthenticationError("missing or invalid API key")
    return matched


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
