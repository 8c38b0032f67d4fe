"""felix.client works on an unpatched trio-websocket and never patches it itself.

The test suite installs Felix's trio-websocket fixes for every test
(conftest.py); these tests take them out again, so they show the client does
not rely on them: no socket leaks after a refusal or a server's close, and a
ping crossing the client's Close does not cancel the caller's nursery.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from felix._patches import trio_websocket_leaks, trio_websocket_pong
from felix.client import Gap, StreamNotFound, open_workflow_stream
from felix.client._websocket import open_connection
from tests.conftest import Server, create_workflow, publish

_PATCHED = (*trio_websocket_leaks.PATCHED, "_handle_ping_event")


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """trio-websocket as released, for one test."""
    for name in _PATCHED:
        method: Any = getattr(WebSocketConnection, name)
        monkeypatch.setattr(WebSocketConnection, name, method.__wrapped__)
    assert not trio_websocket_leaks.installed()
    assert not trio_websocket_pong.installed()
    yield
    monkeypatch.undo()


def test_importing_and_using_the_client_patches_nothing() -> None:
    # A fresh interpreter: the suite's own conftest has installed the fixes here.
    script = textwrap.dedent(
        """
        import trio
        from felix._patches import trio_websocket_leaks, trio_websocket_pong
        from felix.client import Backoff, ReconnectFailed, open_workflow_stream

        async def main():
            backoff = Backoff(max_attempts=1)
            async with open_workflow_stream("http://127.0.0.1:9", "wf", backoff=backoff) as s:
                try:
                    async for _ in s:
                        pass
                except ReconnectFailed:
                    pass

        trio.run(main)
        print(trio_websocket_leaks.installed(), trio_websocket_pong.installed())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.usefixtures("unpatched")
async def test_no_socket_leaks_after_a_refusal_or_a_close(server: Server) -> None:
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        await publish(http, workflow_id, {"type": "completed"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await _refused(server)
        await _follow_to_the_end(server, workflow_id)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def _refused(server: Server) -> None:
    with trio.fail_after(10):
        async with open_workflow_stream(server.http, "wf_missing") as stream:
            with pytest.raises(StreamNotFound):
                await stream.wait_connected()


async def _follow_to_the_end(server: Server, workflow_id: str) -> None:
    with trio.fail_after(10):
        async with open_workflow_stream(server.http, workflow_id, after=0) as stream:
            kinds = [item.type if isinstance(item, Gap) else item["type"] async for item in stream]
    assert kinds[-1] == "completed"


async def _late_ping_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A one-shot server that answers the client's Close with a ping first."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    task_status.started(listener.getsockname()[1])
    sock, _ = await listener.accept()
    with sock, listener:
        ws = WSConnection(ConnectionType.SERVER)
        while data := await sock.recv(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    await sock.send(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    # As if the ping had left before the Close arrived: FIN + ping.
                    await sock.send(b"\x89\x04late")
                    await sock.send(ws.send(event.response()))
                    return


@pytest.mark.usefixtures("unpatched")
async def test_a_late_ping_does_not_cancel_the_callers_nursery() -> None:
    # The stream's connection, left as soon as it opens: it sends its Close,
    # and the server's ping crosses it (the case open_websocket_url gets wrong).
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # a neighbour of the client
            port = await nursery.start(_late_ping_server)
            async with open_connection(
                f"ws://127.0.0.1:{port}/",
                ssl_context=None,
                headers=[],
                max_message_size=1024,
                connect_timeout=5,
            ):
                pass
            # Still here: the caller's nursery was not cancelled behind its back.
            assert not nursery.cancel_scope.cancel_called
            nursery.cancel_scope.cancel()
