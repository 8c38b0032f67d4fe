"""Signed values: ``base64url(claims + HMAC-SHA256(secret, claims))``, unpadded.

Subscribe tokens (``felix.web.edge.tokens``) and dashboard sessions
(``felix.web.edge.session``) are both such values, with claims of their own and
secrets derived under labels of their own, so one kind never passes for the
other. This module holds what they share: deriving secrets, signing, and
opening a value — canonical base64url only, its MAC compared in constant time
against every secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["derive", "open_signed", "sign"]

_MAC_BYTES: Final = 32
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


def derive(secret: str, label: bytes) -> bytes:
    """A signing secret derived from a configured one (an API key, a token secret).

    A value signed with it never reveals ``secret``, and ``label`` keeps
    secrets for different purposes apart.
    """
    return hmac.new(secret.encode("utf-8", "surrogatepass"), label, hashlib.sha256).digest()


def sign(secret: bytes, claims: str) -> str:
    """``claims`` (ASCII, fields joined by ``|``) with its MAC, as unpadded base64url."""
    raw = claims.encode("ascii")
    mac = hmac.new(secret, raw, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw + mac).rstrip(b"=").decode("ascii")


def open_signed(
    value: str, secrets: Iterable[bytes], *, max_length: int
) -> tuple[list[str], bytes] | None:
    """The ``|``-separated claims of a genuine value, and its raw bytes; else None.

    None for anything longer than ``max_length``, not canonical base64url,
    too short, or whose MAC matches none of ``secrets``. Every secret is
    compared, whichever matched, so the time taken does not say which.
    """
    if len(value) > max_length or not _BASE64URL.fullmatch(value):
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    # Canonical encodings only, so that one value has one spelling.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != value:
        return None
    if len(raw) <= _MAC_BYTES:
        return None
    claims, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    genuine = False
    for secret in secrets:
        expected = hmac.new(secret, claims, hashlib.sha256).digest()
        genuine |= hmac.compare_digest(mac, expected)
    if not genuine:
        return None
    return claims.decode("ascii", "replace").split("|"), raw
