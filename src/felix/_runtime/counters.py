"""Plain counters the hub keeps for operators; no trio, no Prometheus.

The hot path (an actor's fan-out, a subscription's offer) must not pay for
metrics per delivery, so the hub and its actors bump plain integers here at
most once per publish, per connection or per refused handshake, and the web
layer's Prometheus collector (:mod:`felix.web.routes.metrics`) reads them at scrape
time.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

import attrs

__all__ = ["LATENCY_BUCKETS", "Counters", "LatencyHistogram"]

#: Upper bounds, in seconds, of the publish-to-delivery latency buckets.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@attrs.define(eq=False)
class LatencyHistogram:
    """A fixed-bucket histogram: one bisect and two additions per observation."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    #: Observations per bucket (not cumulative); the last one is ``+Inf``.
    counts: list[int] = attrs.field(init=False)
    total: float = attrs.field(default=0.0, init=False)

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        """Record one observation."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


@attrs.define(eq=False)
class Counters:
    """Monotonic totals since the hub opened."""

    #: Workflow events applied (each event of a batch counts).
    events_published: int = 0
    #: Frames handed to the socket by connections that have closed; the
    #: collector adds the ``messages_sent`` of the open ones.
    frames_delivered_closed: int = 0
    #: Connections closed with 4008 because their buffer overflowed.
    slow_consumer_kicks: int = 0
    #: Refused WebSocket handshakes by the contract's error code.
    handshakes_refused: dict[str, int] = attrs.field(factory=dict)
    #: Seconds from a publish being accepted to the end of its fan-out.
    publish_latency: LatencyHistogram = attrs.field(factory=LatencyHistogram)

    def refused(self, code: str) -> None:
        """Count one refused handshake with error ``code``."""
        self.handshakes_refused[code] = self.handshakes_refused.get(code, 0) + 1
