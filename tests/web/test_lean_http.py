"""What Hypercorn does per request, cut down (``felix.web.hypercorn.h11_protocol``)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypercorn.events import RawData

import felix.web.hypercorn as hypercorn_patches
from felix.web.hypercorn import QuickIdleTimer
from tests.conftest import StartServer, read_response

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bytes of every write a Felix connection makes, in order."""
    seen: list[bytes] = []
    original = hypercorn_patches.FelixTCPServer.protocol_send

    async def recording(self: Any, event: Any) -> None:
        if isinstance(event, RawData):
            seen.append(event.data)
        await original(self, event)

    monkeypatch.setattr(hypercorn_patches.FelixTCPServer, "protocol_send", recording)
    return seen


async def answer_healthz(start_server: StartServer) -> bytes:
    server = await start_server()
    host, port = server.http.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(HEALTHZ)
        return await read_response(stream)


async def test_a_response_is_one_write(start_server: StartServer, writes: list[bytes]) -> None:
    answer = await answer_healthz(start_server)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert writes == [answer]


async def test_hypercorn_writes_a_response_in_three_without_the_fix(
    start_server: StartServer, writes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hypercorn_patches.FelixConfig, "felix_lean_http", False)
    answer = await answer_healthz(start_server)
    head, _, body = answer.partition(b"\r\n\r\n")
    # The head, the body, and the zero bytes that end a message with a length.
    assert writes == [head + b"\r\n\r\n", body, b""]


async def test_the_keep_alive_timeout_counts_from_the_last_request(
    start_server: StartServer,
) -> None:
    server = await start_server(keep_alive_timeout=1.0)
    host, port = server.http.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        started = trio.current_time()
        # Four requests 0.5 s apart: each restarts the 1 s timer, so the
        # connection outlives the timeout counted from the first one.
        for _ in range(4):
            await stream.send_all(HEALTHZ)
            assert (await read_response(stream)).startswith(b"HTTP/1.1 200 ")
            await trio.sleep(0.5)
        assert trio.current_time() - started > 1.5
        with trio.fail_after(5):
            assert await stream.receive_some() == b""  # then closed for being idle


@attrs.define
class Group:
    """The part of Hypercorn's task group that the timer uses."""

    _nursery: trio.Nursery


async def test_a_timer_stopped_before_its_task_ran_never_fires() -> None:
    fired: list[str] = []

    def action(name: str) -> Any:
        async def run() -> None:
            await trio.sleep(0.01)
            fired.append(name)

        return run

    timer = QuickIdleTimer()
    async with trio.open_nursery() as nursery:
        group = Group(nursery)
        await timer.restart(group, action("stopped"))  # type: ignore[arg-type]
        await timer.stop()
        await timer.restart(group, action("replaced"))  # type: ignore[arg-type]
        await timer.restart(group, action("last"))  # type: ignore[arg-type]
    assert fired == ["last"]


async def test_a_deferred_timer_starts_only_when_armed() -> None:
    fired: list[str] = []

    def action(name: str) -> Any:
        async def run() -> None:
            fired.append(name)

        return run

    timer = QuickIdleTimer(deferred=True)
    async with trio.open_nursery() as nursery:
        group = Group(nursery)
        await timer.restart(group, action("stopped before it waited"))  # type: ignore[arg-type]
        await timer.stop()
        timer.arm()  # nothing noted: nothing starts
        await timer.restart(group, action("noted"))  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert fired == []  # not started until armed
        timer.arm()
    assert fired == ["noted"]


async def test_a_silent_connection_is_closed_after_the_keep_alive_timeout(
    start_server: StartServer,
) -> None:
    # The timer of a connection that never sends is started by its first wait.
    server = await start_server(keep_alive_timeout=0.5)
    host, port = server.http.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        with trio.fail_after(5):
            assert await stream.receive_some() == b""
