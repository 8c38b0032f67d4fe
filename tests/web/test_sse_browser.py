"""Server-Sent Events in a real headless Chromium: ``EventSource`` against ``felix serve``.

The browser's own ``EventSource`` reads the stream, reconnects by itself with
``Last-Event-ID`` after the server drops it (a real 4008 kick: a proxy between
the two stops forwarding, the server's writes stall, its buffer budget is
passed), and stops for good at the 204 after a finished workflow. The
dashboard, whose WebSocket cannot open, follows workflows over SSE instead.
Synchronous (Playwright's sync API); every wait is on a condition, never a sleep.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.browser import CHROMIUM, RESEARCH_RUN, FelixProcess, felix_process

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's chromium package", allow_module_level=True
    )

from playwright.sync_api import (  # noqa: E402 - only once the skips above have passed
    Browser,
    Page,
    Request,
    expect,
)

expect.set_options(timeout=10_000)
WAIT_MS = 10_000

#: Collects every message of one EventSource in ``window.__events``.
LISTEN = """([url, names]) => {
  window.__events = [];
  window.__opens = 0;
  const source = new EventSource(url);
  window.__source = source;
  source.onopen = () => { window.__opens += 1; };
  for (const name of names) {
    source.addEventListener(name, (event) => {
      if (event instanceof MessageEvent) {
        window.__events.push({ type: event.type, id: event.lastEventId, data: event.data });
      }
    });
  }
}"""
NAMES = ["connected", "workflow_status", "agent_spawned", "agent_output", "synthesis"]
NAMES += ["error", "completed", "close"]


class PausingProxy:
    """A TCP proxy for one server whose server-to-browser direction can be held.

    While held, it reads nothing from the server: the server's writes stall as
    they would for a slow reader, and its subscriber buffer fills.
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit("//", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        # close() may run while _accept is between accept() and keeping the pair:
        # the lock decides whether the pair is kept (then closed by close()) or closed now.
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                browser, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket()
            # A small receive buffer: the stall reaches the server quickly.
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with self.lock:
                if not self.closed:
                    self.sockets += [browser, server]
            if browser not in self.sockets:
                browser.close()
                server.close()
                return
            try:
                server.connect(self.target)
            except OSError:
                return  # the server went away: close() closes both
            for source, sink, held in ((browser, server, False), (server, browser, True)):
                thread = threading.Thread(target=self._pump, args=(source, sink, held), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        try:
            while True:
                if held:
                    self.flowing.wait()
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.flowing.set()
        self.listener.close()
        with self.lock:
            self.closed = True
        for sock in self.sockets:
            sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[FelixProcess]:
    """Development mode; EventSource waits 100 ms to reconnect; a small subscriber budget."""
    with felix_process(
        FELIX_SSE_RETRY_MS="100",
        FELIX_SUBSCRIBER_BUFFER_BYTES="65536",
        FELIX_HISTORY_SIZE="5000",
    ) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def events(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.__events")
    return found


def sse_requests(page: Page) -> list[Request]:
    requests: list[Request] = []
    page.on("request", lambda request: _keep(requests, request))
    return requests


def _keep(requests: list[Request], request: Request) -> None:
    if "/api/v1/sse/" in request.url:
        requests.append(request)


def test_events_arrive_in_order_as_the_contract_names_them(
    server: FelixProcess, page: Page
) -> None:
    workflow_id = server.create_workflow()
    page.goto(server.base + "/healthz")
    page.evaluate(LISTEN, [f"/api/v1/sse/workflows/{workflow_id}", NAMES])
    page.wait_for_function("window.__events.length === 1", timeout=WAIT_MS)
    server.publish(workflow_id, RESEARCH_RUN[:5])
    server.publish(workflow_id, {"type": "error", "message": "a tool timed out"})
    page.wait_for_function("window.__events.length === 7", timeout=WAIT_MS)
    seen = events(page)
    assert seen[0]["type"] == "connected"
    assert seen[0]["id"] == ""
    assert [int(event["id"]) for event in seen[1:]] == list(range(1, 7))
    assert [event["type"] for event in seen[1:]] == [e["type"] for e in RESEARCH_RUN[:5]] + [
        "error"
    ]
    # A workflow's `error` event reaches the page as a MessageEvent with its data.
    assert '"message":"a tool timed out"' in seen[-1]["data"]
    assert page.evaluate("window.__opens") == 1


def test_the_browser_resumes_after_a_4008_kick_without_a_duplicate(
    server: FelixProcess, page: Page
) -> None:
    workflow_id = server.create_workflow()
    proxy = PausingProxy(server.base)
    try:
        requests = sse_requests(page)
        page.goto(proxy.base + "/healthz")
        page.evaluate(LISTEN, [f"/api/v1/sse/workflows/{workflow_id}", NAMES])
        page.wait_for_function("window.__events.length === 1", timeout=WAIT_MS)
        server.publish(workflow_id, RESEARCH_RUN[:3])
        page.wait_for_function("window.__events.length === 4", timeout=WAIT_MS)
        # The browser stops reading (its proxy holds the stream): the server's
        # writes stall, its backlog passes the budget and the stream is kicked.
        proxy.flowing.clear()
        big = [{"type": "synthesis", "content": "x" * 30_000} for _ in range(20)]
        published = 3
        for _ in range(200):
            if server.http.get(f"/api/v1/workflows/{workflow_id}").json()["subscribers"] == 0:
                break
            published = server.publish(workflow_id, big)["last_seq"]
        else:
            pytest.fail("the stalled stream was never closed with 4008")
        proxy.flowing.set()
        closes = "window.__events.filter((e) => e.type === 'close')"
        page.wait_for_function(f"{closes}.length === 1", timeout=WAIT_MS)
        close = page.evaluate(f"{closes}[0]")
        assert close["data"] == '{"code":4008,"reason":"slow consumer"}'
        # EventSource reconnects by itself, with the last id it saw.
        page.wait_for_function("window.__opens === 2", timeout=WAIT_MS)
        server.publish(workflow_id, {"type": "completed"})
        page.wait_for_function(
            f"window.__events.some((e) => e.id === '{published + 1}')", timeout=WAIT_MS
        )
        seen = events(page)
        ids = [int(event["id"]) for event in seen if event["type"] not in ("connected", "close")]
        assert ids == list(range(1, published + 2))  # every event once, in order
        # It asked to resume after the last event it had before the kick.
        before_close = seen[: [event["type"] for event in seen].index("close")]
        assert requests[1].all_headers().get("last-event-id") == before_close[-1]["id"]
        connected = [event for event in seen if event["type"] == "connected"]
        assert '"recovered":true' in connected[1]["data"]
    finally:
        proxy.close()


def test_no_reconnect_loop_after_the_end(server: FelixProcess, page: Page) -> None:
    workflow_id = server.create_workflow()
    server.publish(workflow_id, RESEARCH_RUN[:2])
    requests = sse_requests(page)
    page.goto(server.base + "/healthz")
    # This page never calls close(): EventSource reconnects when the stream
    # ends, gets the 204, and stops for good (readyState CLOSED).
    page.evaluate(LISTEN, [f"/api/v1/sse/workflows/{workflow_id}?after=0", NAMES])
    page.wait_for_function("window.__events.length === 3", timeout=WAIT_MS)
    server.publish(workflow_id, {"type": "completed", "result": 42})
    page.wait_for_function("window.__source.readyState === EventSource.CLOSED", timeout=WAIT_MS)
    seen = events(page)
    assert [event["type"] for event in seen] == [
        "connected",
        "workflow_status",
        "agent_spawned",
        "completed",
        "close",
    ]
    assert seen[-1]["data"] == '{"code":1000,"reason":"workflow completed"}'
    assert len(requests) == 2
    assert requests[1].all_headers().get("last-event-id") == "3"
    response = requests[1].response()
    assert response is not None
    assert response.status == 204


# --- the dashboard, where WebSockets cannot open ------------------------------------------

#: A WebSocket that never opens, as behind a proxy that drops ``Upgrade``.
NO_WEBSOCKETS = """
window.WebSocket = class {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onerror?.(new Event("error"));
      this.onclose?.(new CloseEvent("close", { code: 1006, reason: "" }));
    }, 0);
  }
  send() {}
  close() {}
};
"""


@pytest.fixture
def no_websockets(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.add_init_script(NO_WEBSOCKETS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def test_the_dashboard_falls_back_to_sse(server: FelixProcess, no_websockets: Page) -> None:
    page = no_websockets
    requests = sse_requests(page)
    first = server.create_workflow(task="Followed without WebSockets")
    page.goto(server.base + "/")
    row = page.locator(f'#workflows tr[data-workflow-id="{first}"]')
    expect(row).to_contain_text("Followed without WebSockets")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#connection")).to_have_attribute("data-transport", "sse")
    server.publish(first, RESEARCH_RUN[0])
    expect(row.locator(".status")).to_have_text("running")  # live over the system stream

    row.get_by_role("link", name=first).click()
    expect(page.locator("#workflow-id")).to_have_text(first)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    server.publish(first, RESEARCH_RUN[1:5])
    expect(page.locator("#log tbody tr")).to_have_count(5)
    expect(page.locator("#outputs li").first).to_contain_text("Three recent papers")
    server.publish(first, {"type": "completed"})
    expect(page.locator("#connection")).to_have_attribute("data-state", "finished")
    expect(page.locator("#workflow-status")).to_have_text("completed")
    paths = [request.url.split("?")[0].split("/api/v1/sse/")[1] for request in requests]
    assert paths == ["system/events", f"workflows/{first}"]


KEY = "sse-browser-test-key-0123456789abcdef"


def test_the_signed_in_dashboard_falls_back_to_sse(no_websockets: Page) -> None:
    # The session cookie opens the system stream over SSE (a same-origin
    # EventSource sends Sec-Fetch-Site, not Origin); a workflow's stream, a
    # subscribe token minted with the cookie, as on the WebSocket.
    with felix_process(api_key=KEY) as keyed:
        page = no_websockets
        requests = sse_requests(page)
        workflow_id = keyed.create_workflow(task="Behind a key, without WebSockets")
        page.goto(keyed.base + "/")
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Sign in").click()
        row = page.locator(f'#workflows tr[data-workflow-id="{workflow_id}"]')
        expect(row).to_contain_text("Behind a key, without WebSockets")
        expect(page.locator("#connection")).to_have_attribute("data-transport", "sse")
        keyed.publish(workflow_id, RESEARCH_RUN[0])
        expect(row.locator(".status")).to_have_text("running")
        row.get_by_role("link", name=workflow_id).click()
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        keyed.publish(workflow_id, RESEARCH_RUN[1:3])
        expect(page.locator("#log tbody tr")).to_have_count(3)
        urls = [request.url for request in requests]
        assert KEY not in " ".join(urls)
        assert "token=" in urls[-1]
