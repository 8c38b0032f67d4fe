"""Token-bucket rate limits per client, sans-IO: every call is given ``now``.

A :class:`RateLimiter` holds one bucket per client key (an address such as
``a:127.0.0.1``, or a credential such as ``k:0``). A bucket holds at most
``burst`` tokens and refills at ``rate`` tokens per second; a request takes
one token, or is refused with the seconds until one is back.

Memory is bounded by ``max_clients``. A bucket that has refilled to ``burst``
is the same as no bucket, so idle full buckets are dropped as they are met at
the least-recently-used end of the map; if the map is still full, the least
recently used bucket is forgotten even though it is not full (that client
starts again with a full bucket). A flood of more distinct addresses than
``max_clients`` therefore weakens the limit for the oldest of them rather than
growing memory or refusing newcomers.

The web layer passes :func:`trio.current_time` as ``now``; tests pass numbers.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import attrs

from felix._errors import RateLimited

__all__ = ["RateLimiter", "RateLimiterStatistics"]

#: Slack for float rounding in the refill sum, far below one request.
_EPSILON = 1e-9


@attrs.define
class _Bucket:
    tokens: float
    updated: float


@attrs.frozen
class RateLimiterStatistics:
    """What a limiter holds and has done, for operators."""

    #: Clients with a bucket that is not (known to be) full.
    clients: int
    #: Requests refused since the limiter was made.
    refused: int
    #: Buckets forgotten before they were full, because ``max_clients`` was reached.
    evicted: int


@attrs.define(eq=False)
class RateLimiter:
    """Token buckets keyed by client; ``rate`` 0 means no limit.

    Not thread-safe, and needs no lock under Trio: every method is synchronous.
    """

    #: Tokens per second a bucket regains; 0 turns the limiter off.
    rate: float
    #: Most tokens a bucket holds: the requests a client may make at once.
    burst: int
    #: Most buckets held at once.
    max_clients: int = 10_000
    _buckets: OrderedDict[str, _Bucket] = attrs.field(factory=OrderedDict, init=False)
    _refused: int = attrs.field(default=0, init=False)
    _evicted: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1 or self.max_clients < 1:
            raise ValueError("rate must be >= 0, burst and max_clients >= 1")

    @property
    def enabled(self) -> bool:
        """False when ``rate`` is 0: every request passes and nothing is stored."""
        return self.rate > 0

    def take(self, client: str, now: float) -> float:
        """Take one token from ``client``'s bucket at time ``now`` (seconds).

        Returns 0.0 when the request may go ahead, else the seconds until the
        bucket holds a whole token again (nothing is taken then).
        """
        if not self.enabled:
            return 0.0
        bucket = self._buckets.get(client)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[client] = _Bucket(tokens=float(self.burst), updated=now)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = self._level(bucket, now)
            bucket.updated = now
        if bucket.tokens >= 1 - _EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - 1)
            return 0.0
        self._refused += 1
        return (1 - bucket.tokens) / self.rate

    def check(self, client: str, now: float, *, what: str) -> None:
        """:meth:`take`, raising :class:`RateLimited` (429) when refused.

        ``what`` names the limit for the message, e.g. ``"publishes from this
        address"``; it must not contain a credential.
        """
        wait = self.take(client, now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many {what}: the limit is {self.rate:g} per second with bursts of "
                f"{self.burst}; retry in {retry_after} s",
                retry_after=retry_after,
            )

    def statistics(self) -> RateLimiterStatistics:
        """Buckets held, requests refused, buckets evicted."""
        return RateLimiterStatistics(
            clients=len(self._buckets), refused=self._refused, evicted=self._evicted
        )

    def _level(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.updated)
        return min(float(self.burst), bucket.tokens + elapsed * self.rate)

    def _make_room(self, now: float) -> None:
        # Oldest first: drop the buckets that have refilled, then, if the map
        # is still full, the least recently used one whatever its level.
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if self._level(oldest, now) < self.burst - _EPSILON:
                break
            self._buckets.popitem(last=False)
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)
            self._evicted += 1
