"""The live dashboard in a real headless Chromium against a real ``felix serve``.

Events are published over REST and must appear on the page; the page's
connection is cut and must resume without showing an event twice; with a
key set, the page signs in without the key ever being kept by the page.
Synchronous on purpose (Playwright's sync API cannot run inside Trio); every
wait is Playwright's auto-waiting ``expect``, never a sleep.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.web.browser import (
    CHROMIUM,
    RESEARCH_RUN,
    FelixProcess,
    felix_process,
)

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's chromium package", allow_module_level=True
    )

from playwright.sync_api import (  # noqa: E402 - only once the skips above have passed
    Browser,
    ConsoleMessage,
    Page,
    Request,
    WebSocket,
    expect,
)

KEY = "dashboard-test-key-0123456789abcdef"
#: Auto-waiting limit for each expectation: generous for a loaded 2-core machine.
expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def dev_server() -> Iterator[FelixProcess]:
    """Development mode (no key), with a short history so that a gap is easy to make."""
    with felix_process(FELIX_HISTORY_SIZE="20") as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[FelixProcess]:
    with felix_process(api_key=KEY) as server:
        yield server


class Watched:
    """A page with what it did recorded: requests, WebSocket URLs, console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.sockets: list[WebSocket] = []
        self.errors: list[str] = []
        # Playwright wants Python functions, not bound builtins such as list.append.
        page.on("request", self._request)
        page.on("websocket", self._socket)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _socket(self, socket: WebSocket) -> None:
        self.sockets.append(socket)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx answer and every refused WebSocket itself;
        # the tests provoke those. Anything else (a CSP violation, a script
        # error) is a failure.
        expected = ("WebSocket connection", "Failed to load resource: the server responded")
        if message.type == "error" and not message.text.startswith(expected):
            self.errors.append(message.text)

    @property
    def socket_urls(self) -> list[str]:
        return [socket.url for socket in self.sockets]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context()
    # Keep a handle on every WebSocket the page opens, so a test can cut one.
    context.add_init_script(
        "window.__sockets = [];"
        "const NativeWebSocket = window.WebSocket;"
        "window.WebSocket = class extends NativeWebSocket {"
        "  constructor(...args) { super(...args); window.__sockets.push(this); }"
        "};"
    )
    page = context.new_page()
    watched = Watched(page)
    yield watched
    context.close()
    assert watched.errors == [], watched.errors


def log_seqs(page: Page) -> list[int]:
    """The seq of every row of the event log, in page order."""
    texts: list[str] = page.locator("#log tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.seq)"
    )
    return [int(text) for text in texts]


def test_list_shows_workflows_and_follows_their_status(
    dev_server: FelixProcess, watched: Watched
) -> None:
    page = watched.page
    first = dev_server.create_workflow(task="Compare three vector databases")
    response = page.goto(dev_server.base + "/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    row = page.locator(f'#workflows tr[data-workflow-id="{first}"]')
    expect(row).to_contain_text("Compare three vector databases")
    expect(row.locator(".status")).to_have_text("pending")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    dev_server.publish(first, {"type": "workflow_status", "status": "running"})
    expect(row.locator(".status")).to_have_text("running")
    # One made after the page loaded appears at once, before any event.
    second = dev_server.create_workflow(task="Arrived later")
    later = page.locator(f'#workflows tr[data-workflow-id="{second}"]')
    expect(later).to_contain_text("Arrived later")
    expect(later.locator(".status")).to_have_text("pending")
    dev_server.publish(second, {"type": "agent_spawned", **_agent("late-1")})
    expect(later.locator(".status")).to_have_text("running")

    dev_server.publish(first, {"type": "completed"})
    expect(row.locator(".status")).to_have_text("completed")
    page_sockets: list[str] = page.evaluate("window.__sockets.map((socket) => socket.url)")
    assert [url.split("?")[0] for url in page_sockets] == [
        dev_server.base.replace("http://", "ws://") + "/api/v1/ws/system/events"
    ]
    # Follow the link to the workflow's own page.
    row.get_by_role("link", name=first).click()
    expect(page.locator("#workflow-id")).to_have_text(first)
    expect(page.locator("#connection")).to_have_attribute("data-state", "finished")


def _agent(agent_id: str, agent_type: str = "research", spawn_time: float = 0.1) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_type": agent_type, "spawn_time": spawn_time}


def test_workflow_page_shows_events_as_they_are_published(
    dev_server: FelixProcess, watched: Watched
) -> None:
    page = watched.page
    workflow_id = dev_server.create_workflow(task="Summarise the literature")
    page.goto(f"{dev_server.base}/#/workflows/{workflow_id}")
    expect(page.locator("#workflow-task")).to_have_text("Summarise the literature")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#workflow-status")).to_have_text("pending")

    dev_server.publish(workflow_id, RESEARCH_RUN[:4])  # running, and three agents
    expect(page.locator("#workflow-status")).to_have_text("running")
    agents = page.locator("#agents li")
    expect(agents).to_have_count(3)
    expect(agents.nth(1)).to_contain_text("critic-1")
    expect(agents.nth(1)).to_contain_text("critic")
    expect(agents.nth(1)).to_contain_text("spawned at 0.4 s")

    dev_server.publish(workflow_id, RESEARCH_RUN[4])
    output = page.locator("#outputs li").first
    expect(output).to_contain_text("Three recent papers compare")
    expect(output.get_by_role("meter")).to_have_attribute("aria-valuenow", "0.82")
    expect(output).to_contain_text("0.82")
    # The agent's last confidence follows its outputs.
    expect(agents.first.get_by_role("meter")).to_have_attribute("aria-valuenow", "0.82")

    # Event content is untrusted: shown as text, never run as markup.
    hostile = '<img src=x onerror="window.__pwned = 1">'
    dev_server.publish(workflow_id, {**RESEARCH_RUN[5], "content": hostile})
    expect(page.locator("#outputs li").nth(1).locator(".content")).to_have_text(hostile)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#outputs img").count() == 0

    dev_server.publish(workflow_id, RESEARCH_RUN[6:8])
    expect(page.locator("#synthesis")).to_contain_text("Retrieval-augmented agents are the safer")
    expect(page.locator("#synthesis")).to_contain_text("research-1, critic-1, writer-1")
    expect(page.locator("#synthesis").get_by_role("meter")).to_have_attribute(
        "aria-valuenow", "0.87"
    )

    dev_server.publish(workflow_id, {"type": "completed", "result": {"winner": "retrieval"}})
    expect(page.locator("#workflow-status")).to_have_text("completed")
    expect(page.locator("#outcome")).to_contain_text("Completed")
    expect(page.locator("#outcome-result")).to_contain_text('"winner": "retrieval"')
    expect(page.locator("#connection")).to_have_attribute("data-state", "finished")
    expect(page.locator("#connection")).to_contain_text("workflow completed")
    assert log_seqs(page) == list(range(1, 10))
    # Finished means finished: one socket, no reconnection after the terminal close.
    assert page.evaluate("window.__sockets.length") == 1


def test_a_cut_connection_resumes_without_duplicates(
    dev_server: FelixProcess, watched: Watched
) -> None:
    page = watched.page
    workflow_id = dev_server.create_workflow()
    dev_server.publish(workflow_id, RESEARCH_RUN[:3])
    page.goto(f"{dev_server.base}/#/workflows/{workflow_id}")
    expect(page.locator("#log tbody tr")).to_have_count(3)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    page.evaluate("window.__sockets.at(-1).close(4000, 'cut by the test')")
    # Published while the page is (probably) between connections.
    dev_server.publish(workflow_id, RESEARCH_RUN[3:6])
    expect(page.locator("#log tbody tr")).to_have_count(6)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    page.evaluate("window.__sockets.at(-1).close(4000, 'cut again')")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    dev_server.publish(workflow_id, RESEARCH_RUN[6:8])
    expect(page.locator("#log tbody tr")).to_have_count(8)

    assert log_seqs(page) == list(range(1, 9))
    assert page.locator("#outputs li").count() == 3
    assert page.locator("#agents li").count() == 3
    # Each connection resumed after the last event it had shown, with a token.
    # (The page's own list: Playwright's socket events may still be on their way.)
    urls: list[str] = page.evaluate("window.__sockets.map((socket) => socket.url)")
    assert [re.search(r"after=(\d+)", url)[1] for url in urls] == ["0", "3", "6"]  # type: ignore[index]
    assert all("token=" in url for url in urls)


def test_events_lost_from_the_history_are_announced(
    dev_server: FelixProcess, watched: Watched
) -> None:
    page = watched.page
    workflow_id = dev_server.create_workflow()
    # 25 events, 20 kept (FELIX_HISTORY_SIZE): 1 to 5 are gone.
    outputs = [
        {"type": "agent_output", "agent_id": "a", "content": f"step {n}", "confidence": 0.5}
        for n in range(25)
    ]
    dev_server.publish(workflow_id, outputs)
    page.goto(f"{dev_server.base}/#/workflows/{workflow_id}")
    expect(page.locator("#log tbody tr")).to_have_count(20)
    expect(page.locator("#workflow-notice")).to_contain_text("Events 1 to 5 are no longer kept")
    assert log_seqs(page) == list(range(6, 26))
    # The REST snapshot still knows the agent the lost events built.
    expect(page.locator("#agents li")).to_contain_text("25 outputs")


def test_an_unknown_workflow_says_so(dev_server: FelixProcess, watched: Watched) -> None:
    watched.page.goto(f"{dev_server.base}/#/workflows/nope")
    expect(watched.page.locator("#message-title")).to_have_text("Workflow not found")


def test_sign_in_never_leaves_the_key_in_the_page(
    keyed_server: FelixProcess, watched: Watched
) -> None:
    page = watched.page
    workflow_id = keyed_server.create_workflow(task="Behind a key")
    page.goto(keyed_server.base + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    key_field = page.get_by_label("API key")

    key_field.fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_have_text("That key was not accepted.")
    expect(key_field).to_have_value("")
    assert page.context.cookies() == []

    key_field.fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    row = page.locator(f'#workflows tr[data-workflow-id="{workflow_id}"]')
    expect(row).to_contain_text("Behind a key")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    keyed_server.publish(workflow_id, RESEARCH_RUN[0])
    expect(row.locator(".status")).to_have_text("running")

    # The workflow page's stream opens with a scoped token (waited for as an
    # event: the socket list is filled as Playwright hands events over).
    with page.expect_websocket(lambda socket: "token=" in socket.url):
        row.get_by_role("link", name=workflow_id).click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    keyed_server.publish(workflow_id, RESEARCH_RUN[1])
    expect(page.locator("#agents li")).to_contain_text("research-1")

    # The key went out once, to the sign-in route, in a header; it is nowhere else.
    carried = [
        request
        for request in watched.requests
        if KEY in json.dumps(request.all_headers()) or KEY in (request.post_data or "")
    ]
    assert [(r.method, r.url) for r in carried] == [
        ("POST", keyed_server.base + "/dashboard/session")
    ]
    assert all(KEY not in request.url for request in watched.requests)
    page_sockets: list[str] = page.evaluate("window.__sockets.map((socket) => socket.url)")
    assert all(KEY not in url for url in [*page_sockets, *watched.socket_urls])
    assert any("token=" in url for url in page_sockets)
    assert KEY not in page.content()
    storage = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert KEY not in storage
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page cannot read it
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "felix_session"
    assert KEY not in cookie["value"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")

    # The cookie opens what the dashboard needs and nothing else, even same-origin.
    status = page.evaluate(
        """async (id) => (await fetch(`/api/v1/workflows/${id}`,
               {method: "DELETE", headers: {"X-Felix-Dashboard": "1"}})).status""",
        workflow_id,
    )
    assert status == 401
    status = page.evaluate(
        """async (id) => (await fetch(`/api/v1/workflows/${id}/events`, {method: "POST",
               headers: {"X-Felix-Dashboard": "1", "Content-Type": "application/json"},
               body: JSON.stringify({type: "completed"})})).status""",
        workflow_id,
    )
    assert status == 401
    cookies = {cookie["name"]: cookie["value"]}
    with httpx.Client(base_url=keyed_server.base, cookies=cookies) as http:
        for method, path in [
            ("DELETE", f"/api/v1/workflows/{workflow_id}"),
            ("POST", f"/api/v1/workflows/{workflow_id}/events"),
            ("POST", "/api/v1/broadcast"),
            ("GET", "/api/v1/connections"),
        ]:
            headers = {"X-Felix-Dashboard": "1", "Origin": keyed_server.base}
            assert http.request(method, path, headers=headers, json={}).status_code == 401
        # Without the dashboard header the cookie does not count, even for reading.
        assert http.get("/api/v1/workflows").status_code == 401
        assert http.get("/api/v1/workflows", headers={"X-Felix-Dashboard": "1"}).status_code == 200
    assert httpx.get(keyed_server.base + "/api/v1/workflows").status_code == 401
    assert keyed_server.http.get(f"/api/v1/workflows/{workflow_id}").json()["status"] == "running"

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.context.cookies() == []


def test_another_site_cannot_use_the_session(keyed_server: FelixProcess, watched: Watched) -> None:
    page = watched.page
    workflow_id = keyed_server.create_workflow()
    page.goto(keyed_server.base + "/")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    # localhost and 127.0.0.1 are different sites: a page there plays the attacker.
    other_site = re.sub(r"//127\.0\.0\.1:", "//localhost:", keyed_server.base)
    assert other_site != keyed_server.base
    page.goto(other_site + "/healthz")
    with page.expect_response(re.compile(r"/tokens$")) as answer:
        page.evaluate(
            """(url) => fetch(url, {method: "POST", mode: "no-cors", credentials: "include"})""",
            f"{keyed_server.base}/api/v1/workflows/{workflow_id}/tokens",
        )
    assert answer.value.status == 401
