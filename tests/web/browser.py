"""A real ``felix serve`` process and a headless Chromium, for the dashboard's browser tests.

Playwright's sync API cannot run inside a Trio loop, so these helpers are
plain synchronous code: the server is a subprocess on port 0 (its URL read
from its log, as ``tests/test_cli.py`` does), events are published with a
blocking ``httpx.Client``, and the browser is Debian's ``chromium`` driven by
Playwright (never a downloaded one: ``playwright install`` is not needed).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

#: Debian's package installs it here; the PATH is searched first.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]


class FelixProcess:
    """``felix serve --port 0`` in a subprocess, with a blocking REST client."""

    def __init__(self, *, api_key: str | None = None, **env: str) -> None:
        self.api_key = api_key
        environ = {**os.environ, "FELIX_LOG_LEVEL": "INFO", **env}
        environ.pop("FELIX_API_KEY", None)
        if api_key is not None:
            environ["FELIX_API_KEY"] = api_key
        self.process = subprocess.Popen(
            [sys.executable, "-m", "felix.cli", "serve", "--port", "0"],
            stderr=subprocess.PIPE,
            env=environ,
        )
        assert self.process.stderr is not None
        self.log: list[str] = []
        self.base = self._read_url(self.process.stderr)
        # Keep reading, so the child never blocks on a full stderr pipe.
        self._drain = threading.Thread(target=self._read_rest, args=(self.process.stderr,))
        self._drain.start()
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=10)

    def _read_url(self, stream: IO[bytes]) -> str:
        for raw in stream:
            line = raw.decode(errors="replace")
            self.log.append(line)
            match = re.search(r"Running on (http://\S+)", line)
            if match:
                return match[1]
        self.process.wait(10)
        raise RuntimeError("felix serve exited early:\n" + "".join(self.log))

    def _read_rest(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.log.append(raw.decode(errors="replace"))
        stream.close()

    def create_workflow(self, **body: Any) -> str:
        """Create a workflow over REST and return its id."""
        response = self.http.post("/api/v1/workflows", json=body)
        assert response.status_code == 201, response.text
        workflow_id: str = response.json()["workflow_id"]
        return workflow_id

    def publish(self, workflow_id: str, events: Any) -> dict[str, Any]:
        """Publish one event or a batch over REST; returns the 202 body."""
        response = self.http.post(f"/api/v1/workflows/{workflow_id}/events", json=events)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it hangs) and its client."""
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._drain.join(10)


@contextmanager
def felix_process(*, api_key: str | None = None, **env: str) -> Iterator[FelixProcess]:
    """A :class:`FelixProcess` for the duration of the block."""
    server = FelixProcess(api_key=api_key, **env)
    try:
        yield server
    finally:
        server.close()


#: Events of a small research workflow, for the screenshot and the tests.
RESEARCH_RUN: list[dict[str, Any]] = [
    {"type": "workflow_status", "status": "running"},
    {
        "type": "agent_spawned",
        "agent_id": "research-1",
        "agent_type": "research",
        "spawn_time": 0.1,
    },
    {"type": "agent_spawned", "agent_id": "critic-1", "agent_type": "critic", "spawn_time": 0.4},
    {"type": "agent_spawned", "agent_id": "writer-1", "agent_type": "writer", "spawn_time": 0.9},
    {
        "type": "agent_output",
        "agent_id": "research-1",
        "content": "Three recent papers compare retrieval-augmented agents with fine-tuned ones.",
        "confidence": 0.82,
    },
    {
        "type": "agent_output",
        "agent_id": "critic-1",
        "content": "Paper B's benchmark leaks test data; its 12-point gain is not reliable.",
        "confidence": 0.64,
    },
    {
        "type": "agent_output",
        "agent_id": "writer-1",
        "content": "Draft: retrieval wins on fresh facts, fine-tuning on style and format.",
        "confidence": 0.91,
    },
    {
        "type": "synthesis",
        "content": "Retrieval-augmented agents are the safer default; fine-tune only for "
        "format-heavy tasks. Treat paper B's numbers with care.",
        "confidence": 0.87,
        "agents_synthesized": ["research-1", "critic-1", "writer-1"],
        "final": True,
    },
]
