"""What an idle WebSocket costs, and the guarantees kept while making it cheaper.

An idle WebSocket is two tasks: Hypercorn's connection task (which reads and
hands client messages to the app directly) and the app's writer. One pinger
task serves every connection. See docs/performance.md for the measurements.
"""

from __future__ import annotations

import socket as stdlib_socket
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.events import RawData

from felix._core.events import make_frame
from felix._runtime.subscription import Subscription
from felix.web.hypercorn import AppInbox, FelixConfig, FelixTCPServer
from tests.conftest import StartServer, create_workflow, raw_websocket, task_names, wait_until

PINGER = "felix.web.hypercorn.pinger.Pinger._run"


async def test_an_idle_websocket_costs_two_tasks(start_server: StartServer) -> None:
    server = await start_server()
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    # One connection first, so that the pinger (one task for all) is running.
    first, _ = await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}")
    with first:
        await wait_until(lambda: server.hub.connection_count() == 1)
        await trio.testing.wait_all_tasks_blocked()
        before = len(task_names())
        socks = [
            (await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}"))[0]
            for _ in range(5)
        ]
        try:
            await wait_until(lambda: server.hub.connection_count() == 6)
            await trio.testing.wait_all_tasks_blocked()
            # Hypercorn's connection task and the app's writer: no reader
            # task, no ping task of its own.
            assert len(task_names()) - before == 2 * 5
            assert task_names().count(PINGER) == 1
        finally:
            for sock in socks:
                sock.close()


async def test_the_pinger_ends_with_the_last_websocket(start_server: StartServer) -> None:
    server = await start_server()
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    for _ in range(2):  # and starts again with the next one
        sock, _ = await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}")
        with sock:
            await wait_until(lambda: task_names().count(PINGER) == 1)
        # It must not hold the server's connection nursery, and so shutdown.
        await wait_until(lambda: PINGER not in task_names())


@pytest.mark.parametrize("sink", [True, False], ids=["sink", "reader-task"])
async def test_client_commands_are_answered_and_a_disconnect_ends_the_connection(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, sink: bool
) -> None:
    if not sink:  # as on a stream that cannot hand messages over
        monkeypatch.setattr("felix.web.edge.websocket.current_connection", lambda: None)
    server = await start_server()
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    sock, _ = await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}")
    with sock:
        masked_ping = b"\x81\x84" + b"\x00\x00\x00\x00" + b"ping"  # text "ping", zero mask
        await sock.send(masked_ping)
        received = b""
        with trio.fail_after(5):
            while not received.endswith(b"\x81\x04pong"):  # the text answer "pong"
                chunk = await sock.recv(4096)
                assert chunk
                received += chunk
        readers = [name for name in task_names() if name.endswith("felix.web.edge.websocket._read")]
        assert len(readers) == (0 if sink else 1)
    await wait_until(lambda: server.hub.connection_count() == 0)


# --- a frame half written by a direct write is finished before anything else -----------


class _Peer:
    """A FelixTCPServer over a socket pair, without the rest of Hypercorn."""

    def __init__(self) -> None:
        ours, self.theirs = stdlib_socket.socketpair()
        server: Any = FelixTCPServer.__new__(FelixTCPServer)
        server.config = FelixConfig()
        server.config.felix_send_timeout = 5.0
        server.send_lock = trio.Lock()
        server.stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.server: FelixTCPServer = server

    def read(self) -> bytes:
        self.theirs.setblocking(False)
        try:
            return self.theirs.recv(65536)
        except BlockingIOError:
            return b""


async def test_hypercorn_frames_follow_the_rest_of_a_direct_write() -> None:
    peer = _Peer()
    sub = Subscription(connection_id="c", workflow_id="w", connected_at="now")
    frame = make_frame({"type": "synthesis", "content": "x" * 50})

    class HalfWriter:
        def try_send(self, data: bytes) -> int:
            return 10  # the socket took the first 10 bytes only

    sub.direct = HalfWriter()
    assert sub.offer([frame])
    peer.server.felix_take_leftover = sub.take_leftover
    # A pong from Hypercorn's own task, before the app's writer has run.
    await peer.server.protocol_send(RawData(b"\x8a\x00"))
    assert peer.read() == frame.wire[10:] + b"\x8a\x00"
    assert sub.buffered_bytes == 0
    peer.theirs.close()
    await peer.server.stream.aclose()


def test_a_kick_keeps_the_rest_of_a_half_written_frame() -> None:
    sub = Subscription(connection_id="c", workflow_id="w", connected_at="now")
    frame = make_frame({"type": "synthesis", "content": "x" * 50})

    class HalfWriter:
        def try_send(self, data: bytes) -> int:
            return 10

    sub.direct = HalfWriter()
    assert sub.offer([frame])
    sub.kick(4008, "slow consumer")
    # The close frame can only follow a whole frame.
    assert sub.take_leftover() == frame.wire[10:]


# --- the app's inbox behaves as the memory channel it replaces ---------------------------


def message(n: int) -> Any:
    return {"type": "websocket.receive", "text": str(n), "bytes": None}


async def number(inbox: AppInbox) -> int:
    received: Any = await inbox.receive()
    return int(received["text"])


async def test_inbox_keeps_order_and_waits_when_full() -> None:
    inbox = AppInbox(2)
    got: list[int] = []
    async with trio.open_nursery() as nursery:

        async def put_five() -> None:
            for n in range(5):
                await inbox.put(message(n))

        nursery.start_soon(put_five)
        await trio.testing.wait_all_tasks_blocked()
        assert len(inbox) == 2  # the third put waits for room
        for _ in range(5):
            got.append(await number(inbox))
    assert got == [0, 1, 2, 3, 4]


async def test_inbox_waits_are_cancellable() -> None:
    inbox = AppInbox(1)
    with trio.move_on_after(0.01):
        await inbox.receive()
    await inbox.put(message(1))
    with trio.move_on_after(0.01):
        await inbox.put(message(2))
    assert await number(inbox) == 1
    assert len(inbox) == 0


async def test_inbox_has_one_receiver() -> None:
    inbox = AppInbox(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inbox.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await inbox.receive()
        await inbox.put(message(0))


def numbers(items: list[Any]) -> list[int]:
    return [int(item["text"]) for item in items]


async def test_inbox_hands_a_burst_over_at_once_in_order() -> None:
    inbox = AppInbox(3)
    taken: list[int] = []
    async with trio.open_nursery() as nursery:

        async def put_five() -> None:
            for n in range(5):
                await inbox.put(message(n))

        nursery.start_soon(put_five)
        await trio.testing.wait_all_tasks_blocked()
        taken.append(await number(inbox))
        # What is queued now comes at once, in order (the putter waiting for room
        # may or may not have run during receive()'s checkpoint: 2 or 3 items).
        taken += numbers(inbox.take_queued())
        assert taken == list(range(len(taken)))
        assert len(taken) >= 3
        await trio.testing.wait_all_tasks_blocked()  # the putter is let in for the rest
        taken += numbers(inbox.take_queued())
    assert taken == [0, 1, 2, 3, 4]
    assert inbox.take_queued() == []
