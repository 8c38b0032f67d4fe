"""``SyncFelixClient``: the blocking client, driven from worker threads.

The server runs in the test's Trio loop, so every blocking call runs in a
thread (``trio.to_thread.run_sync``), as it would in a program without an
event loop.
"""

from __future__ import annotations

import gc
import socket
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import trio

from felix.client import (
    ApiError,
    Backoff,
    ConnectionFailed,
    Gap,
    StreamItem,
    StreamNotFound,
    SyncFelixClient,
)
from tests.conftest import Server

T = TypeVar("T")
FAST = Backoff(base=0.02, max_delay=0.1, max_elapsed=10.0)
RUNNING = {"type": "workflow_status", "status": "running"}


async def in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


def seqs(items: list[StreamItem]) -> list[int]:
    return [item["seq"] for item in items if not isinstance(item, Gap)]


def portal_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if "portal" in thread.name]


async def test_rest_calls(server: Server) -> None:
    def blocking() -> None:
        with SyncFelixClient(server.http) as client:
            created = client.create_workflow(workflow_id="wf_sync", task="t", metadata={"k": 1})
            assert created["status"] == "pending"
            published = client.publish("wf_sync", [RUNNING, {"type": "synthesis", "content": "s"}])
            assert (published.accepted, published.first_seq, published.last_seq) == (2, 1, 2)
            assert client.get_workflow("wf_sync")["synthesis"]["content"] == "s"
            assert [event["seq"] for event in client.events("wf_sync", after=1)] == [2]
            assert client.list_workflows(status="running").total == 1
            assert client.mint_token("wf_sync", ttl_seconds=60).token
            assert client.cancel("wf_sync")["status"] == "cancelled"
            with pytest.raises(ApiError) as info:
                client.get_workflow("wf_missing")
            assert info.value.status == 404

    await in_thread(blocking)


async def test_stream_is_an_iterator_that_ends_after_the_terminal_event(server: Server) -> None:
    def blocking() -> list[StreamItem]:
        with SyncFelixClient(server.http) as client:
            workflow_id = client.create_workflow()["workflow_id"]
            client.publish(workflow_id, [RUNNING, {"type": "synthesis", "content": "a"}])
            items = []
            for item in client.stream(workflow_id, after=0, backoff=FAST):
                items.append(item)
                if len(items) == 2:
                    client.publish(workflow_id, {"type": "completed"})
            return items

    assert seqs(await in_thread(blocking)) == [1, 2, 3]


async def test_streams_and_runs_from_many_threads(server: Server) -> None:
    def produce(client: SyncFelixClient, n: int) -> str:
        with client.run(task=f"job {n}") as run:
            run.agent_spawned("a1", "worker")
            run.agent_output("a1", f"out {n}", 0.5)
            run.synthesis("done", final=True)
            run.result = n
        return run.workflow_id

    def blocking() -> list[list[StreamItem]]:
        with SyncFelixClient(server.http) as client, ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda n: produce(client, n), range(4)))
            follow = lambda workflow_id: list(client.stream(workflow_id, after=0))  # noqa: E731
            return list(pool.map(follow, ids))

    streams = await in_thread(blocking)
    assert [seqs(items) for items in streams] == [[1, 2, 3, 4, 5]] * 4
    assert all(items[-1]["result"] in range(4) for items in streams)  # type: ignore[index]


async def test_run_failure_in_blocking_code(server: Server) -> None:
    def blocking() -> dict[str, Any]:
        with SyncFelixClient(server.http) as client:
            with pytest.raises(KeyError):
                fail_in_a_run(client)
            return client.get_workflow("wf_sync_fails")

    def fail_in_a_run(client: SyncFelixClient) -> None:
        with client.run(workflow_id="wf_sync_fails") as run:
            run.agent_spawned("a1", "lookup")
            raise KeyError("no such key")

    workflow = await in_thread(blocking)
    assert workflow["status"] == "failed"
    assert workflow["error"]["message"] == "'no such key'"


async def test_errors_reach_the_iterator(server: Server) -> None:
    def blocking() -> None:
        with SyncFelixClient(server.http) as client, pytest.raises(StreamNotFound):
            next(client.stream("wf_nope"))

    await in_thread(blocking)


async def test_close_releases_threads_and_sockets(server: Server) -> None:
    def blocking() -> None:
        before = portal_threads()
        client = SyncFelixClient(server.http)
        workflow_id = client.create_workflow()["workflow_id"]
        client.publish(workflow_id, RUNNING)
        # A stream left open mid-way, and one never started: close() ends both.
        stream = client.stream(workflow_id, after=0)
        assert seqs([next(stream)]) == [1]
        untouched = client.stream(workflow_id)
        assert len(portal_threads()) == len(before) + 1
        client.close()
        client.close()  # idempotent
        assert portal_threads() == before
        assert list(stream) == []  # ended by close()
        del untouched
        with pytest.raises(RuntimeError):
            client.get_workflow(workflow_id)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await in_thread(blocking)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    # And the server saw the stream's connection go.
    with trio.fail_after(5):
        while server.hub.connection_count() != 0:
            await trio.sleep(0.01)


def test_refused_connection_is_a_clear_error_without_a_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with (
            SyncFelixClient(f"http://127.0.0.1:{port}") as client,
            pytest.raises(ConnectionFailed, match="connection refused"),
        ):
            client.list_workflows()
