"""FELIX_LOG_FORMAT=json: one JSON object per line, with request and connection ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from felix._logging import CONNECTION_ID, REQUEST_ID, JsonFormatter
from felix._runtime.hub import Hub
from felix.settings import Settings, SettingsError
from tests.conftest import StartServer, create_workflow, receive_json

KEY = "logging-test-key-0123456789"


def _record(message: str, *args: Any, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("felix.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_line_is_one_json_object() -> None:
    line = JsonFormatter().format(_record("hello %s", "world"))
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == {"time", "level", "logger", "message"}
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "felix.test"
    assert parsed["message"] == "hello world"
    assert parsed["time"].endswith("+00:00")


def test_ids_and_exceptions_are_added_when_known() -> None:
    request_token = REQUEST_ID.set("req_1")
    connection_token = CONNECTION_ID.set("conn_1")
    try:
        parsed = json.loads(JsonFormatter().format(_record("failed", exc=True)))
    finally:
        CONNECTION_ID.reset(connection_token)
        REQUEST_ID.reset(request_token)
    assert parsed["request_id"] == "req_1"
    assert parsed["connection_id"] == "conn_1"
    assert "ValueError: boom" in parsed["exception"]


def test_log_format_setting() -> None:
    assert Settings().log_format == "text"
    assert Settings.from_env({"FELIX_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="FELIX_LOG_FORMAT"):
        Settings.from_env({"FELIX_LOG_FORMAT": "xml"})


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Capture the ``felix`` loggers' records as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("felix")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_request_id_over_a_real_socket(
    start_server: StartServer, json_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(api_keys=(KEY,), log_format="json")

    def broken(self: Hub) -> dict[str, Any]:
        raise RuntimeError("statistics broke")

    monkeypatch.setattr(Hub, "statistics", broken)
    async with server.client(KEY) as client:
        response = await client.get(
            "/api/v1/stats?api_key=" + KEY, headers={"X-Request-ID": "trace-42"}
        )
        assert response.status_code == 500
        response = await client.get("/api/v1/stats", headers={"X-Request-ID": "bad id {}"})
        assert response.status_code == 500
    first, second = (line for line in _lines(json_lines) if line["logger"] == "felix.web")
    assert first["request_id"] == "trace-42"
    assert first["message"] == "unhandled error in GET /api/v1/stats"
    assert "RuntimeError: statistics broke" in first["exception"]
    # A client id that is not a plain token is replaced by one of ours.
    assert second["request_id"].startswith("req_")
    assert KEY not in json_lines.getvalue()


async def test_connection_id_over_a_real_socket(
    start_server: StartServer, json_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server()

    def broken(text: str) -> dict[str, Any]:
        raise RuntimeError("command handling broke")

    monkeypatch.setattr("felix.web.edge.websocket._command_reply", broken)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        connected = await receive_json(ws)
        await ws.send_message('{"type": "ping"}')
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 1011
    (line,) = (line for line in _lines(json_lines) if line["logger"] == "felix.ws")
    assert line["connection_id"] == connected["connection_id"]
    assert line["request_id"].startswith("req_")
    assert "RuntimeError: command handling broke" in line["exception"]
