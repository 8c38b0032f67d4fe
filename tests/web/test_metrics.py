"""GET /metrics over real sockets: the numbers follow what the server did."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected

from felix._runtime.counters import LatencyHistogram
from tests.conftest import StartServer, create_workflow, publish, raw_websocket, receive_json

KEY = "metrics-test-key-0123456789"
BIG = "x" * 30_000


async def scrape(client: httpx.AsyncClient) -> tuple[str, dict[tuple[str, tuple[Any, ...]], float]]:
    """The text of /metrics and its samples by (name, sorted labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, samples


def value(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_publishes_subscribers_kicks_and_refusals(
    start_server: StartServer,
) -> None:
    server = await start_server(
        api_keys=(KEY,), subscriber_buffer_bytes=64 * 1024, send_timeout=0.5
    )
    async with server.client() as anonymous:
        response = await anonymous.get("/metrics")
        assert response.status_code == 401
    async with server.client(KEY) as client:
        _, before = await scrape(client)
        assert value(before, "felix_connections_open") == 0
        assert value(before, "felix_events_published_total") == 0
        assert value(before, "felix_publish_latency_seconds_count") == 0
        workflow_id = await create_workflow(client)

        async with server.open_ws(workflow_id, f"api_key={KEY}") as ws:
            await receive_json(ws)  # connected
            batch = [{"type": "error", "message": m} for m in "abc"]
            response = await publish(client, workflow_id, batch)
            assert response.status_code == 202
            for _ in range(3):
                await receive_json(ws)
            for query in ("api_key=wrong", f"api_key={KEY}&after=x"):
                with pytest.raises(ConnectionRejected):
                    async with server.open_ws(workflow_id, query):
                        pass
            with pytest.raises(ConnectionRejected):
                async with server.open_ws("wf_missing", f"api_key={KEY}"):
                    pass
            text, samples = await scrape(client)
            assert value(samples, "felix_connections_open") == 1
            assert value(samples, "felix_workflows", status="running") == 1
            assert value(samples, "felix_workflows", status="pending") == 0
            assert value(samples, "felix_events_published_total") == 3
            # connected + three events, to the one subscriber.
            assert value(samples, "felix_frames_delivered_total") == 4
            assert value(samples, "felix_publish_latency_seconds_count") == 1
            assert value(samples, "felix_publish_latency_seconds_bucket", le="+Inf") == 1
            assert value(samples, "felix_publish_latency_seconds_sum") > 0
            assert value(samples, "felix_handshakes_refused_total", reason="unauthorized") == 1
            assert value(samples, "felix_handshakes_refused_total", reason="bad_request") == 1
            assert (
                value(samples, "felix_handshakes_refused_total", reason="workflow_not_found") == 1
            )
            assert value(samples, "felix_slow_consumer_kicks_total") == 0
            for secret in (KEY, "wrong", workflow_id):
                assert secret not in text

        # A subscriber that never reads: its backlog passes the budget, it is
        # closed with 4008, and the kick is counted when the connection ends.
        sock, _ = await raw_websocket(
            server.http, f"/api/v1/ws/workflows/{workflow_id}?api_key={KEY}", rcvbuf=4096
        )
        with sock:
            batches = 0
            with trio.fail_after(30):
                while True:
                    batch = [{"type": "synthesis", "content": BIG}] * 10
                    assert (await publish(client, workflow_id, batch)).status_code == 202
                    batches += 1
                    _, samples = await scrape(client)
                    if value(samples, "felix_slow_consumer_kicks_total") == 1:
                        break
                    await trio.sleep(0.01)
        assert value(samples, "felix_connections_open") == 0
        assert value(samples, "felix_events_published_total") == 3 + 10 * batches
        assert value(samples, "felix_publish_latency_seconds_count") == 1 + batches
        # The earlier subscriber's four frames stay counted after it closed.
        assert value(samples, "felix_frames_delivered_total") >= 5


async def test_each_app_has_its_own_registry(start_server: StartServer) -> None:
    first, second = await start_server(), await start_server()
    async with first.client() as one, second.client() as two:
        await publish(one, await create_workflow(one), {"type": "error", "message": "x"})
        _, samples_one = await scrape(one)
        _, samples_two = await scrape(two)
    assert value(samples_one, "felix_events_published_total") == 1
    assert value(samples_two, "felix_events_published_total") == 0


def test_latency_histogram_buckets() -> None:
    histogram = LatencyHistogram(bounds=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(seconds)
    assert histogram.counts == [2, 1, 1]
    assert histogram.total == pytest.approx(2.65)
