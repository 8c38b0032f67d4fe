"""The ``felix`` command in a real subprocess: serve, signals, demo."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import felix.cli
from tests.conftest import raw_websocket, receive_json

FELIX = [sys.executable, "-m", "felix.cli"]


class Log:
    """Everything the child wrote to stderr; ``done`` is set at end of file."""

    def __init__(self, first: bytes) -> None:
        self.chunks = [first]
        self.done = trio.Event()

    async def text(self) -> str:
        with trio.fail_after(10):
            await self.done.wait()
        return b"".join(self.chunks).decode()


async def start_serve(nursery: trio.Nursery, **env: str) -> tuple[trio.Process, str, Log]:
    """Start ``felix serve --port 0``; return it, its base URL and its stderr."""
    process = await trio.lowlevel.open_process(
        [*FELIX, "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        env={**os.environ, "FELIX_LOG_LEVEL": "INFO", **env},
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(20):
        while (match := re.search(rb"Running on (http://\S+)", seen)) is None:
            chunk = await process.stderr.receive_some()
            assert chunk, f"felix serve exited early: {seen.decode()}"
            seen += chunk
    log = Log(seen)
    nursery.start_soon(drain, process.stderr, log)
    return process, match[1].decode(), log


async def drain(stream: Any, log: Log) -> None:
    # Keep reading so the child never blocks on a full stderr pipe.
    while chunk := await stream.receive_some():
        log.chunks.append(chunk)
    log.done.set()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_websockets_1001_and_exits_0(
    nursery: trio.Nursery, signum: signal.Signals
) -> None:
    process, base, _ = await start_serve(nursery, FELIX_SHUTDOWN_GRACE="2")
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/api/v1/workflows")
        workflow_id = response.json()["workflow_id"]
    ws_url = base.replace("http://", "ws://") + f"/api/v1/ws/workflows/{workflow_id}"
    async with open_websocket_url(ws_url) as ws:
        await receive_json(ws)
        process.send_signal(signum)
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(10):
            await ws.get_message()
    assert info.value.reason is not None
    assert (info.value.reason.code, info.value.reason.reason) == (1001, "server shutting down")
    with trio.fail_after(10):
        assert await process.wait() == 0


async def test_dev_mode_is_announced_once(nursery: trio.Nursery) -> None:
    process, _, log = await start_serve(nursery)
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await process.wait() == 0
    assert (await log.text()).count("development mode") == 1


async def test_no_dev_mode_warning_with_a_key(nursery: trio.Nursery) -> None:
    process, base, log = await start_serve(nursery, FELIX_API_KEY="k")
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/api/v1/workflows")).status_code == 401
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await process.wait() == 0
    assert "development mode" not in await log.text()


async def test_bad_setting_is_a_clear_error() -> None:
    result = await trio.run_process(
        [*FELIX, "serve"],
        env={**os.environ, "FELIX_HISTORY_SIZE": "lots"},
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"FELIX_HISTORY_SIZE='lots' is not a valid integer" in result.stderr


async def test_demo_shows_the_whole_pipeline() -> None:
    result = await trio.run_process(
        [*FELIX, "demo", "--delay", "0", "--port", "0"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    for needle in ("connected", "agent_spawned", "agent_output", "synthesis", "completed"):
        assert needle in out
    assert "connection closed: 1000 workflow completed" in out


async def test_shutdown_is_bounded_with_stalled_clients(nursery: trio.Nursery) -> None:
    grace = 1.0
    # A long send timeout, so only the shutdown path can free the stalled writer.
    process, base, _ = await start_serve(
        nursery, FELIX_SHUTDOWN_GRACE=str(grace), FELIX_SEND_TIMEOUT="60"
    )
    async with httpx.AsyncClient(base_url=base) as client:
        workflow_id = (await client.post("/api/v1/workflows")).json()["workflow_id"]
        stalled, _ = await raw_websocket(base, f"/api/v1/ws/workflows/{workflow_id}", rcvbuf=4096)
        with stalled:
            ws_url = base.replace("http://", "ws://") + f"/api/v1/ws/workflows/{workflow_id}"
            async with open_websocket_url(ws_url) as healthy:
                await receive_json(healthy)
                batch = [{"type": "synthesis", "content": "x" * 30_000}] * 10
                for _ in range(30):  # 9 MB: more than the kernel buffers hold
                    response = await client.post(
                        f"/api/v1/workflows/{workflow_id}/events", json=batch
                    )
                    assert response.status_code == 202
                    for _ in range(10):
                        await receive_json(healthy)
                process.send_signal(signal.SIGTERM)
                started = trio.current_time()
                with pytest.raises(ConnectionClosed) as info, trio.fail_after(10):
                    await healthy.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == 1001
            with trio.fail_after(10):
                assert await process.wait() == 0
            assert trio.current_time() - started <= grace + 1.0


# --- start-up errors: one line naming host and port, exit 1 ------------------------------


async def felix_fails(*args: str) -> str:
    """Run ``felix ARGS`` to its end; return the one line it printed on stderr."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [*FELIX, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    return stderr.strip()


async def test_serve_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = await felix_fails("serve", "--port", str(port))
    assert line == (
        f"felix serve: error: cannot start: cannot listen on 127.0.0.1:{port}: "
        "the port is in use (is another server running?)"
    )


@pytest.mark.parametrize("host", ["256.1.1.1", "no-such-host.invalid"])
async def test_serve_on_a_bad_host_is_one_line(host: str) -> None:
    line = await felix_fails("serve", "--host", host, "--port", "8123")
    assert line == (
        f"felix serve: error: cannot start: cannot listen on {host}:8123: "
        f"{host!r} is not a valid address or known host name"
    )


def test_serve_on_a_privileged_port_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The suite runs as root, where port 80 binds: make the bind refuse as it
    # does for everybody else.
    refused: list[socket.socket] = []

    class Unprivileged(socket.socket):
        def bind(self, address: Any) -> None:
            if isinstance(address, tuple) and address[1] == 80:
                refused.append(self)  # Hypercorn leaves it open; the process would exit
                raise PermissionError(errno.EACCES, "Permission denied")
            super().bind(address)

    monkeypatch.setattr(socket, "socket", Unprivileged)
    monkeypatch.delenv("FELIX_API_KEY", raising=False)
    # In this process: leave the suite's logging set-up alone.
    monkeypatch.setattr(felix.cli.serve, "configure_logging", lambda *_: None)
    try:
        assert felix.cli.main(["serve", "--host", "127.0.0.1", "--port", "80"]) == 1
    finally:
        for sock in refused:
            sock.close()
    out, err = capsys.readouterr()
    assert err == (
        "felix serve: error: cannot start: cannot listen on 127.0.0.1:80: "
        "permission denied (ports below 1024 need privileges)\n"
    )
    assert out == ""


async def test_bench_points_at_nox() -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [*FELIX, "bench", "--quick"], capture_stderr=True, check=False
        )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "felix bench: error: the benchmark is a development tool: "
        "run `nox -s bench` from a Felix checkout\n"
    )


def test_the_bench_is_not_in_the_package() -> None:
    # A development tool: it lives in bench/felix_bench and runs with nox -s bench.
    import importlib.util

    assert importlib.util.find_spec("felix.bench") is None


async def test_demo_interrupted_exits_130_without_a_traceback() -> None:
    process = await trio.lowlevel.open_process(
        [*FELIX, "demo", "--delay", "5", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(20):
        while b"is watching it" not in seen:
            chunk = await process.stdout.receive_some()
            assert chunk, seen.decode()
            seen += chunk
    process.send_signal(signal.SIGINT)
    with trio.fail_after(20):
        assert await process.wait() == 130
        stderr = b""
        while chunk := await process.stderr.receive_some():
            stderr += chunk
    assert b"Traceback" not in stderr, stderr.decode()
