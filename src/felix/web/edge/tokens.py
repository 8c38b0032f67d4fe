"""Subscribe tokens: signed, expiring permission to watch one workflow.

A token is ``base64url(claims + mac)`` without padding, where ``claims`` is
the ASCII text ``v1|subscribe|<workflow_id>|<expires>`` (``expires`` in whole
Unix seconds; workflow ids cannot contain ``|``) and ``mac`` is the 32-byte
HMAC-SHA256 of ``claims``. It is URL-safe as it is, carries no secret, and
cannot be changed without the signing secret.

The signing secrets, in order of preference:

1. ``FELIX_TOKEN_SECRET`` (several, comma-separated, for rotation);
2. else one per ``FELIX_API_KEY`` key: ``HMAC-SHA256(key, label)``, so a
   token never reveals a key and a key rotation (``new,old``) keeps the
   tokens signed under the old key valid until the old key is removed;
3. else (development mode without a secret) a random secret made once per
   process: tokens then work until the process ends.

The first secret signs; every secret verifies. Sans-IO: callers pass ``now``
(wall-clock seconds, :func:`time.time`), since ``expires_at`` is a date.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Final

import attrs

from felix._core.events import format_timestamp
from felix._errors import AuthenticationError
from felix._runtime.hub import WORKFLOW_ID
from felix.settings import Settings
from felix.web.edge.signing import derive, open_signed, sign

__all__ = ["SubscribeToken", "TokenSigner", "expires_at"]

SCOPE: Final = "subscribe"
VERSION: Final = "v1"
#: Longest token accepted; real ones are under 150 characters.
MAX_TOKEN_LENGTH: Final = 512
#: The domain-separation label of secrets derived from API keys and token secrets.
_LABEL: Final = b"felix subscribe-token secret v1"
_INVALID: Final = "invalid or expired token"
#: Development mode's secret when FELIX_TOKEN_SECRET is unset: one per process.
_PROCESS_SECRET: Final = secrets.token_bytes(32)


def _derive(secret: str) -> bytes:
    return derive(secret, _LABEL)


def expires_at(expires: int) -> str:
    """``expires`` (Unix seconds) as the contract's RFC 3339 timestamp."""
    return format_timestamp(datetime.fromtimestamp(expires, UTC))


@attrs.frozen
class SubscribeToken:
    """What a verified token grants: subscribing to ``workflow_id`` until ``expires``."""

    workflow_id: str
    #: Unix seconds; the token is refused from this second on.
    expires: int
    #: A short digest of the token, safe to use as a rate-limit key (not a log line).
    token_id: str


@attrs.frozen
class TokenSigner:
    """Mints and verifies subscribe tokens with a fixed set of secrets."""

    #: Derived secrets; the first signs, all verify.
    secrets: tuple[bytes, ...] = attrs.field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenSigner:
        """The signer for ``settings``: see the module docstring for the secrets."""
        if settings.token_secrets:
            return cls(tuple(_derive(secret) for secret in settings.token_secrets))
        if settings.api_keys:
            return cls(tuple(_derive(key) for key in settings.api_keys))
        return cls((_PROCESS_SECRET,))

    def mint(self, workflow_id: str, *, now: float, ttl: int) -> tuple[str, int]:
        """A token for ``workflow_id`` living ``ttl`` seconds from ``now``.

        Returns the token and its expiry in Unix seconds (at most ``ttl`` away).
        """
        if not WORKFLOW_ID.fullmatch(workflow_id) or ttl < 1:
            raise ValueError("a token needs a valid workflow id and a positive ttl")
        expires = int(now + ttl)
        return sign(self.secrets[0], f"{VERSION}|{SCOPE}|{workflow_id}|{expires}"), expires

    def verify(self, token: str, *, now: float) -> SubscribeToken:
        """The grant of a genuine, unexpired token.

        Raises :class:`AuthenticationError` (401) with one message for every
        failure: malformed, forged, signed by an unknown secret, or expired.
        Which workflow it is for is the caller's to check.
        """
        opened = open_signed(token, self.secrets, max_length=MAX_TOKEN_LENGTH)
        if opened is None:
            raise AuthenticationError(_INVALID)
        parts, raw = opened
        if len(parts) != 4 or parts[0] != VERSION or parts[1] != SCOPE:
            raise AuthenticationError(_INVALID)
        workflow_id, expires_text = parts[2], parts[3]
        if not WORKFLOW_ID.fullmatch(workflow_id) or not expires_text.isdigit():
            raise AuthenticationError(_INVALID)
        expires = int(expires_text)
        if now >= expires:
            raise AuthenticationError(_INVALID)
        token_id = hashlib.sha256(raw).hexdigest()[:32]
        return SubscribeToken(workflow_id=workflow_id, expires=expires, token_id=token_id)
