"""``felix demo`` as a real subprocess: into a running server with ``--url``, an
embedded server kept up with ``--keep``, its port, and its exit statuses."""

from __future__ import annotations

import errno
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import trio

from felix.cli.demo import DEFAULT_PORT, demo_events
from felix.client import FelixClient, SyncFelixClient
from tests.conftest import Server, StartServer, create_workflow
from tests.test_cli_tools import FELIX, environment, felix, one_line_error
from tests.test_client import closed_port


def dashboard_ids(out: str, base: str) -> list[str]:
    """The workflow ids of the dashboard links the demo printed for ``base``."""
    return re.findall(rf"Dashboard: {re.escape(base)}/#/workflows/(\S+)", out)


async def test_url_publishes_into_a_running_server(start_server: StartServer) -> None:
    server = await start_server(api_keys=("k",))
    result = await felix("demo", "--delay", "0", "--url", server.http, "--api-key", "k")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "connection closed: 1000 workflow completed" in out
    assert "embedded" not in out
    ids = dashboard_ids(out, server.http)
    assert ids, out
    assert len(set(ids)) == 1
    async with FelixClient(server.http, "k") as client:
        workflow = await client.get_workflow(ids[0])
    assert workflow["status"] == "completed"
    assert workflow["last_seq"] == len(demo_events())
    assert len(workflow["agents"]) == 4


async def test_url_takes_the_key_from_the_environment(start_server: StartServer) -> None:
    server = await start_server(api_keys=("k",))
    result = await felix("demo", "--delay", "0", "--url", server.http, FELIX_API_KEY="k")
    assert result.returncode == 0, result.stderr.decode()


async def test_url_with_a_bad_key_is_one_line(start_server: StartServer) -> None:
    server = await start_server(api_keys=("k",))
    result = await felix("demo", "--delay", "0", "--url", server.http, "--api-key", "wrong")
    assert "FELIX_API_KEY" in one_line_error(result)
    assert result.returncode == 1


async def test_url_unreachable_is_one_line() -> None:
    with closed_port() as port:
        result = await felix("demo", "--url", f"http://127.0.0.1:{port}")
    assert "is the server running?" in one_line_error(result)
    assert result.returncode == 1


@pytest.mark.parametrize("extra", [["--keep"], ["--port", "0"]])
async def test_embedded_server_options_do_not_go_with_url(extra: list[str]) -> None:
    result = await felix("demo", "--url", "http://127.0.0.1:9", *extra)
    assert one_line_error(result) == (
        "felix demo: error: --keep and --port are for the embedded server, not --url"
    )
    assert result.returncode == 2


# --- the embedded server: --keep, --port ---------------------------------------------------


async def read_until(stream: trio.abc.ReceiveStream, needle: bytes, seen: bytes = b"") -> bytes:
    """What ``stream`` gave until ``needle`` appeared in it."""
    with trio.fail_after(30):
        while needle not in seen:
            chunk = await stream.receive_some()
            assert chunk, seen.decode()
            seen += chunk
    return seen


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_keep_serves_until_a_signal_then_exits_0(signum: signal.Signals) -> None:
    process = await trio.lowlevel.open_process(
        [*FELIX, "demo", "--delay", "0", "--port", "0", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    assert process.stdout is not None
    out = (await read_until(process.stdout, b"Ctrl-C to stop")).decode()
    base = re.search(r"Felix is serving on (http://\S+)", out)
    assert base is not None, out
    (workflow_id, *_) = dashboard_ids(out, base[1])
    async with httpx.AsyncClient(base_url=base[1]) as http:
        for _ in range(3):  # it keeps answering
            assert (await http.get("/")).status_code == 200
            workflow = (await http.get(f"/api/v1/workflows/{workflow_id}")).json()
            assert workflow["status"] == "completed"
    assert process.returncode is None
    process.send_signal(signum)
    with trio.fail_after(20):
        assert await process.wait() == 0


async def test_sigterm_during_the_run_exits_143() -> None:
    process = await trio.lowlevel.open_process(
        [*FELIX, "demo", "--delay", "5", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    await read_until(process.stdout, b"is watching it")
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        assert await process.wait() == 128 + signal.SIGTERM
    stderr = await process.stderr.receive_some()
    assert b"Traceback" not in stderr, stderr.decode()


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """Keep ``port`` busy for the block (it may be busy already: another server)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
        yield


async def test_default_port_falls_back_to_a_free_one_when_busy() -> None:
    with occupied(DEFAULT_PORT):
        result = await felix("demo", "--delay", "0")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"Port {DEFAULT_PORT} is in use" in out
    assert f"felix demo --url http://127.0.0.1:{DEFAULT_PORT}" in out
    served = re.search(r"Felix is serving on http://127.0.0.1:(\d+)", out)
    assert served is not None
    assert int(served[1]) != DEFAULT_PORT


async def test_a_chosen_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await felix("demo", "--port", str(port))
    assert one_line_error(result) == (
        f"felix demo: error: cannot start: cannot listen on 127.0.0.1:{port}: "
        "the port is in use (is another server running?)"
    )


# --- the client's order=, which felix workflows uses -------------------------------------


async def test_list_workflows_newest_first(server: Server, client: httpx.AsyncClient) -> None:
    ids = [await create_workflow(client, task=f"task {i}") for i in range(4)]
    async with FelixClient(server.http) as felix_client:
        page = await felix_client.list_workflows(limit=2, offset=1, order="newest")
        oldest = await felix_client.list_workflows(limit=2)
    assert [w["workflow_id"] for w in page.workflows] == [ids[2], ids[1]]
    assert page.total == 4
    assert [w["workflow_id"] for w in oldest.workflows] == ids[:2]

    def blocking() -> list[str]:
        with SyncFelixClient(server.http) as sync:
            return [w["workflow_id"] for w in sync.list_workflows(order="newest").workflows]

    assert await trio.to_thread.run_sync(blocking) == ids[::-1]
