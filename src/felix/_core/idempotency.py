"""Idempotency keys: what a workflow remembers of the publishes it has applied.

Sans-IO. A producer that sends a publish with a key (``Idempotency-Key`` on
REST, ``idempotency_key`` on the producer stream) and retries it after a 503
or a dropped connection must not get its events applied twice. Each workflow
keeps, for the most recent keys it applied, a digest of the body and the
answer it gave (:class:`Applied`); a repeat with the same digest gets that
answer again and applies nothing, a repeat with another body is refused
(:class:`~felix._errors.IdempotencyKeyReused`, 422).

The table (:class:`KeyTable`) lives with the workflow's state, so it is kept
exactly as long as the workflow (its retention included) and bounded:
beyond ``limit`` keys the oldest applied is forgotten. Only a digest of the
body is stored, never the body.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

import attrs

from felix._core.events import Event
from felix._errors import IdempotencyKeyReused, InvalidEvent

__all__ = ["KEY_PATTERN", "Applied", "Claim", "KeyTable", "body_digest", "check_key"]

#: What an idempotency key may be: 1-128 of letters, digits and ``_.:-``.
KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def check_key(key: Any) -> str:
    """Return ``key`` if it is a valid idempotency key; else :class:`InvalidEvent` (422)."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise InvalidEvent(
            "the idempotency key must be 1-128 characters of letters, digits and _ . : -"
        )
    return key


def body_digest(events: list[Any]) -> str:
    """A digest of a publish's events as parsed (key order and spacing do not count).

    One event and a batch holding only it have the same digest: both are the
    list of events they publish.
    """
    canonical = json.dumps(events, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@attrs.frozen
class Claim:
    """A publish's idempotency key and the digest of its body."""

    key: str
    digest: str

    @classmethod
    def of(cls, key: str, events: list[Any]) -> Claim:
        """The claim of a publish of ``events`` (as parsed) under ``key`` (checked here)."""
        return cls(check_key(key), body_digest(events))


@attrs.frozen
class Applied:
    """The answer a keyed publish got, and the digest of its body."""

    digest: str
    accepted: int
    first_seq: int | None
    last_seq: int | None

    @classmethod
    def of(cls, digest: str, events: list[Event]) -> Applied:
        """The record of ``events`` just applied under a key."""
        if not events:
            return cls(digest, 0, None, None)
        return cls(digest, len(events), events[0].seq, events[-1].seq)

    def answer_for(self, key: str, digest: str) -> Applied:
        """This record, if ``digest`` is the body it was made for.

        Raises :class:`IdempotencyKeyReused` (422) for another body.
        """
        if digest != self.digest:
            raise IdempotencyKeyReused(
                f"idempotency key {key!r} was used for another body; "
                "a key may only be repeated with the same events"
            )
        return self

    def encode(self) -> str:
        """A compact text form, as the broker stores it."""
        return f"{self.digest} {self.accepted} {self.first_seq or 0} {self.last_seq or 0}"

    @classmethod
    def decode(cls, text: str) -> Applied:
        """The inverse of :meth:`encode`."""
        digest, accepted, first, last = text.split(" ")
        return cls(digest, int(accepted), int(first) or None, int(last) or None)


@attrs.define
class KeyTable:
    """The most recent ``limit`` keys a workflow applied, oldest first."""

    limit: int = 10_000
    _applied: dict[str, Applied] = attrs.field(factory=dict, init=False)

    def __len__(self) -> int:
        return len(self._applied)

    def recall(self, key: str, digest: str) -> Applied | None:
        """The answer ``key`` got, or None if it is not remembered.

        Raises :class:`IdempotencyKeyReused` (422) when ``key`` was applied
        with another body.
        """
        applied = self._applied.get(key)
        return None if applied is None else applied.answer_for(key, digest)

    def remember(self, key: str, applied: Applied) -> None:
        """Keep ``applied`` under ``key``, forgetting the oldest key beyond the limit."""
        self._applied[key] = applied
        while len(self._applied) > self.limit:
            del self._applied[next(iter(self._applied))]
