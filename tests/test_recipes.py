"""The recipes of docs/how-to/recipes.md, run against a real server.

tests/test_docs.py runs each example file as a program; these tests use the
recipes' parts (the LangChain callback handler, the FastAPI app, the browser
page) against the test's server and check what reached Felix.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from felix.client import FelixClient, SyncFelixClient
from tests.client_loops import Loop
from tests.conftest import Server, StartServer

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipes importable by name, as they import each other."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def recipe(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.usefixtures("examples")
async def test_langchain_handler_reports_steps_as_agents(server: Server) -> None:
    pytest.importorskip("langchain_core", reason="langchain-core is a test extra")
    langchain = recipe("recipe_langchain")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    def blocking() -> list[dict[str, Any]]:
        model = FakeListChatModel(responses=["found", "weak", "final"])
        with SyncFelixClient(server.http) as client:
            with client.run(task="q") as run:
                handler = langchain.FelixCallbackHandler(
                    run, steps={"research", "critic", "writer"}, confidence=0.6
                )
                answer = langchain.research_chain(model).invoke(
                    {"question": "q"}, config={"callbacks": [handler]}
                )
                run.result = answer
            events: list[dict[str, Any]] = client.events(run.workflow_id)
            return events

    with trio.fail_after(30):
        events = await trio.to_thread.run_sync(blocking)
    agents = [(e["agent_id"], e["agent_type"]) for e in events if e["type"] == "agent_spawned"]
    assert agents == [("research-1", "research"), ("critic-2", "critic"), ("writer-3", "writer")]
    outputs = [(e["agent_id"], e["content"]) for e in events if e["type"] == "agent_output"]
    assert outputs == [("research-1", "found"), ("critic-2", "weak"), ("writer-3", "final")]
    assert all(e["confidence"] == 0.6 for e in events if e["type"] == "agent_output")
    assert (events[-1]["type"], events[-1]["result"]) == ("completed", "final")


@pytest.mark.usefixtures("examples")
async def test_langchain_handler_reports_a_failing_step(server: Server) -> None:
    pytest.importorskip("langchain_core", reason="langchain-core is a test extra")
    langchain = recipe("recipe_langchain")
    from langchain_core.runnables import RunnableLambda

    def broken(_: object) -> str:
        raise ValueError("no sources")

    def blocking() -> dict[str, Any]:
        with SyncFelixClient(server.http) as client:
            try:
                with client.run(workflow_id="wf_lc_fails") as run:
                    handler = langchain.FelixCallbackHandler(run, steps={"research"})
                    step = RunnableLambda(broken).with_config(run_name="research")
                    step.invoke("q", config={"callbacks": [handler]})
            except ValueError:
                pass
            return client.get_workflow("wf_lc_fails")

    with trio.fail_after(30):
        workflow = await trio.to_thread.run_sync(blocking)
    assert workflow["status"] == "failed"
    assert workflow["error"]["message"] == "no sources"


@pytest.mark.usefixtures("examples")
async def test_fastapi_service_publishes_from_its_handlers(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi", reason="fastapi is a test extra")
    monkeypatch.setenv("FELIX_URL", server.http)
    service = recipe("recipe_fastapi")
    import httpx

    async def client_side() -> list[dict[str, Any]]:
        async with service.app.router.lifespan_context(service.app):
            transport = httpx.ASGITransport(app=service.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
                answers = [await http.post("/jobs", json={"question": f"q{i}"}) for i in range(3)]
        # Leaving the lifespan waited for the jobs: every workflow has ended.
        async with FelixClient(server.http) as felix_client:
            return [
                await felix_client.get_workflow(answer.json()["workflow_id"]) for answer in answers
            ]

    workflows = await Loop("asyncio").run(client_side)
    assert [workflow["status"] for workflow in workflows] == ["completed"] * 3
    assert [workflow["task"] for workflow in workflows] == ["q0", "q1", "q2"]
    assert all(workflow["result"] == {"answer": "yes, with caveats"} for workflow in workflows)


# --- the browser page -----------------------------------------------------------------------

KEY = "recipes-test-key-0123456789abcdef"


async def serve_page(stream: trio.SocketStream) -> None:
    """A one-page web server: every request gets follow.html."""
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        html = (EXAMPLES / "follow.html").read_bytes()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {len(html)}\r\n"
        await stream.send_all(head.encode() + b"connection: close\r\n\r\n" + html)


def follow_in_chromium(page_url: str, publish: Any) -> tuple[list[str], str]:
    """Open the page in headless Chromium, publish, and read what it shows."""
    from playwright.sync_api import expect, sync_playwright

    from tests.web.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(page_url)
            expect(page.locator("#events li")).to_have_count(2, timeout=10_000)
            publish()
            expect(page.locator("#status")).to_have_text("workflow completed", timeout=10_000)
            texts = page.locator("#events li").all_inner_texts()
            return texts, page.locator("#status").inner_text()
        finally:
            browser.close()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_browser_page_follows_a_workflow_with_a_token(
    start_server: StartServer, nursery: trio.Nursery, transport: str
) -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    from tests.web.browser import CHROMIUM

    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    # The page's own origin, on loopback: Chromium keeps public pages from loopback servers.
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, serve_page, 0, host="127.0.0.1")
    )
    origin = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    server = await start_server(api_keys=(KEY,), allowed_origins=(origin,))
    async with FelixClient(server.http, api_key=KEY) as client:
        if transport == "sse":
            async with server.client(KEY) as http:
                probe = await http.get("/api/v1/sse/workflows/wf_probe")
            if probe.json().get("error") == "not_found":
                pytest.skip("this server has no SSE routes yet (GET /api/v1/sse/workflows/{id})")
        workflow_id = (await client.create_workflow())["workflow_id"]
        await client.publish(workflow_id, [{"type": "workflow_status", "status": "running"}])
        await client.publish(workflow_id, {"type": "synthesis", "content": "first"})
        token = (await client.mint_token(workflow_id)).token
        page_url = (
            f"{origin}/follow.html?server={server.http}&workflow={workflow_id}"
            f"&token={token}&transport={transport}"
        )
        trio_token = trio.lowlevel.current_trio_token()

        def publish() -> None:
            # From the browser thread, into the test's Trio loop.
            trio.from_thread.run(
                client.publish, workflow_id, {"type": "completed"}, trio_token=trio_token
            )

        with trio.fail_after(60):
            texts, status = await trio.to_thread.run_sync(follow_in_chromium, page_url, publish)
    assert texts == ["1 workflow_status running", "2 synthesis first", "3 completed"]
    assert status == "workflow completed"
