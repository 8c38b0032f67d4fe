"""``GET /metrics``: the hub's figures in Prometheus's text format.

Nothing here runs on the hot path. The hub, its actors and the connections
keep plain integers (:class:`felix._runtime.counters.Counters`, each subscription's
``messages_sent``), bumped at most once per publish, connection or refused
handshake; :class:`HubCollector` turns them into metric families only when
Prometheus scrapes. Each app gets its own :class:`~prometheus_client.CollectorRegistry`
(never the process-wide default), so several apps in one process do not clash.

``/metrics`` is authenticated like the REST API: when ``FELIX_API_KEY`` is set
the scraper must send ``Authorization: Bearer K`` (Prometheus's
``authorization`` scrape option) or ``X-API-Key: K``. Labels carry only
bounded values (workflow statuses, the contract's error codes); never a key,
token, workflow id or address.

Metrics:

``felix_connections_open``
    Open WebSocket connections (workflow and system streams).
``felix_workflows{status}``
    Workflows held, by status (finished ones until they are forgotten).
``felix_events_published_total``
    Workflow events applied (each event of a batch counts).
``felix_frames_delivered_total``
    Frames handed to WebSocket clients' sockets or writers: live events,
    replays, ``connected`` frames and pong replies.
``felix_slow_consumer_kicks_total``
    Connections closed with 4008 because their buffer overflowed.
``felix_handshakes_refused_total{reason}``
    WebSocket handshakes and event streams (SSE) refused, by the contract's error code.
``felix_publish_latency_seconds``
    Per publish (one observation per batch, not per subscriber): from the
    moment the publisher handed the command to the workflow's inbox to the
    end of its fan-out, when every subscriber's frames were written to its
    socket (the direct path) or queued for its writer. So it includes the
    wait in a busy inbox; it does not include the later write of frames a
    slow subscriber had queued.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from quart import Response

from felix._runtime.hub import Hub

__all__ = ["HubCollector", "metrics_registry", "view"]


class HubCollector(Collector):
    """Reads a hub's counters at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, built from the hub's current figures."""
        hub = self.hub
        counters = hub.counters
        stats = hub.statistics()
        yield GaugeMetricFamily(
            "felix_connections_open", "Open WebSocket connections.", value=stats["connections"]
        )
        workflows = GaugeMetricFamily(
            "felix_workflows", "Workflows held, by status.", labels=["status"]
        )
        for status, count in stats["workflows_by_status"].items():
            workflows.add_metric([status], count)
        yield workflows
        yield CounterMetricFamily(
            "felix_events_published",
            "Workflow events applied.",
            value=counters.events_published,
        )
        open_sent = sum(info.messages_sent for info in hub.connections())
        yield CounterMetricFamily(
            "felix_frames_delivered",
            "Frames handed to WebSocket clients.",
            value=counters.frames_delivered_closed + open_sent,
        )
        yield CounterMetricFamily(
            "felix_slow_consumer_kicks",
            "Connections closed with 4008 (slow consumer).",
            value=counters.slow_consumer_kicks,
        )
        refused = CounterMetricFamily(
            "felix_handshakes_refused",
            "WebSocket handshakes and event streams refused, by error code.",
            labels=["reason"],
        )
        for reason, count in sorted(counters.handshakes_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        latency = counters.publish_latency
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(latency.bounds, latency.counts, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + latency.counts[-1]))
        yield HistogramMetricFamily(
            "felix_publish_latency_seconds",
            "Seconds from a publish entering a workflow's inbox to the end of its fan-out.",
            buckets=buckets,
            sum_value=latency.total,
        )


def metrics_registry(hub: Hub) -> CollectorRegistry:
    """A registry of its own holding a :class:`HubCollector` for ``hub``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry


def view(hub: Hub) -> Callable[[], Awaitable[Response]]:
    """The handler of ``GET /metrics`` for ``hub`` (the edge authenticates it)."""
    registry = metrics_registry(hub)

    async def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return metrics
