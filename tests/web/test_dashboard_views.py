"""The dashboard's views of a run, in a real headless Chromium against a real ``felix serve``.

The list: newest first (whether or not the server honours ``order=newest``),
filtered by status and searched by id and task, with the filter kept in the
URL. One workflow: its timeline (agents as lanes from spawn to last output,
events as marks, durations derived from the server's timestamps), a click on
an agent that shows its outputs alone, the banner counting non-fatal errors,
and the metadata. Every wait is Playwright's auto-waiting ``expect``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
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
    ConsoleMessage,
    Locator,
    Page,
    Route,
    expect,
)

#: Auto-waiting limit for each expectation: generous for a loaded 2-core machine.
expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def server() -> Iterator[FelixProcess]:
    with felix_process() as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; any script error or CSP violation on it fails the test."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    yield page
    context.close()
    assert errors == [], errors


def _row_ids(page: Page, ids: list[str]) -> list[str]:
    """Of ``ids``, those whose row is visible, in page order."""
    shown: list[str] = page.locator("#workflows tbody tr:visible").evaluate_all(
        "rows => rows.map(row => row.dataset.workflowId)"
    )
    return [workflow_id for workflow_id in shown if workflow_id in ids]


# --- the list ------------------------------------------------------------------------------


def test_list_is_newest_first_and_filtered_by_status_and_search(
    server: FelixProcess, page: Page
) -> None:
    ids = [server.create_workflow(task=f"zebra survey part {n}") for n in range(3)]
    server.publish(ids[0], {"type": "completed"})
    page.goto(server.base + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator(f'tr[data-workflow-id="{ids[0]}"] .status')).to_have_text("completed")
    assert _row_ids(page, ids) == ids[::-1]

    search = page.get_by_label("Search by workflow id or task")
    search.fill("ZEBRA survey")  # the task, in any case
    expect(page.locator("#list-summary")).to_have_text(re.compile(r"^3 of \d+ workflows match\.$"))
    assert _row_ids(page, ids) == ids[::-1]
    assert page.locator("#workflows tbody tr:visible").count() == 3
    search.fill(ids[1][-6:])  # part of an id
    expect(page.locator("#workflows tbody tr:visible")).to_have_count(1)
    expect(page.locator(f'tr[data-workflow-id="{ids[1]}"]')).to_be_visible()

    search.fill("zebra")
    page.get_by_label("Status").select_option("completed")
    expect(page.locator("#workflows tbody tr:visible")).to_have_count(1)
    expect(page.locator(f'tr[data-workflow-id="{ids[0]}"]')).to_be_visible()
    assert page.evaluate("location.hash") == "#/?q=zebra&status=completed"
    # A workflow that completes now joins the filtered list; a new one does not.
    server.publish(ids[2], {"type": "completed"})
    expect(page.locator("#workflows tbody tr:visible")).to_have_count(2)
    assert _row_ids(page, ids) == [ids[2], ids[0]]
    newest = server.create_workflow(task="zebra survey, the last")
    expect(page.locator(f'tr[data-workflow-id="{newest}"]')).to_be_attached()
    expect(page.locator(f'tr[data-workflow-id="{newest}"]')).to_be_hidden()

    page.get_by_label("Status").select_option("failed")
    expect(page.locator("#list-no-match")).to_be_visible()
    expect(page.locator("#workflows")).to_be_hidden()

    # The filter lives in the URL: a reload (or a shared link) keeps it.
    page.goto(server.base + "/#/?q=zebra&status=pending")
    expect(page.get_by_label("Search by workflow id or task")).to_have_value("zebra")
    expect(page.get_by_label("Status")).to_have_value("pending")
    expect(page.locator("#workflows tbody tr:visible")).to_have_count(2)
    assert _row_ids(page, [*ids, newest]) == [newest, ids[1]]  # newest first here too
    page.get_by_label("Search by workflow id or task").fill("")
    page.get_by_label("Status").select_option("")
    expect(page).to_have_url(server.base + "/#/")
    assert _row_ids(page, [*ids, newest]) == [newest, *ids[::-1]]


def test_list_takes_a_newest_first_page_as_it_comes(server: FelixProcess, page: Page) -> None:
    # A server with order=newest answers the newest page at once: the page must
    # not then ask for the "last" page of an oldest-first list.
    ids = [server.create_workflow(task=f"ordered {n}") for n in range(3)]
    asked: list[str] = []

    def newest_first(route: Route) -> None:
        asked.append(route.request.url)
        assert "order=newest" in route.request.url
        body = route.fetch().json()
        body["workflows"].reverse()
        body |= {"order": "newest", "total": body["total"] + 500}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(re.compile(r"/api/v1/workflows\?"), newest_first)
    page.goto(server.base + "/")
    expect(page.locator(f'tr[data-workflow-id="{ids[2]}"]')).to_be_visible()
    assert _row_ids(page, ids) == ids[::-1]
    expect(page.locator("#list-summary")).to_contain_text("The newest")
    assert all("offset=" not in url for url in asked)


# --- one workflow --------------------------------------------------------------------------


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def _duration_text(seconds: float) -> str:
    """The page's rule (durationText in app.js), rounding halves up as JavaScript does."""
    if seconds < 1:
        return f"{int(Decimal(seconds * 1000).quantize(Decimal(1), ROUND_HALF_UP))} ms"
    return f"{Decimal(seconds).quantize(Decimal('0.1'), ROUND_HALF_UP)} s"


def _events(server: FelixProcess, workflow_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = server.http.get(
        f"/api/v1/workflows/{workflow_id}/events"
    ).json()["events"]
    return events


def _lane(page: Page, agent_id: str) -> Locator:
    return page.locator(f'#lanes li[data-agent-id="{agent_id}"]')


def test_timeline_shows_agents_from_spawn_to_last_output(server: FelixProcess, page: Page) -> None:
    workflow_id = server.create_workflow(task="Timed run")
    page.goto(f"{server.base}/#/workflows/{workflow_id}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#timeline-empty")).to_be_visible()
    expect(page.locator("#metadata-card")).to_be_hidden()  # none given

    for batch in (RESEARCH_RUN[:2], RESEARCH_RUN[2:4], RESEARCH_RUN[4:6]):
        server.publish(workflow_id, batch)  # three requests: three moments
    expect(page.locator("#lanes .mark")).to_have_count(6)
    # writer-1 has spawned but not spoken yet.
    expect(_lane(page, "writer-1").locator(".lane-duration")).to_have_text("no output yet")
    expect(page.locator("#workflow-duration")).to_contain_text("so far")
    server.publish(workflow_id, RESEARCH_RUN[6:8])
    server.publish(workflow_id, {"type": "completed"})
    expect(page.locator("#connection")).to_have_attribute("data-state", "finished")

    lanes = page.locator("#lanes > li")
    expect(lanes).to_have_count(4)
    expect(lanes.first).to_contain_text("Run")
    labels = [lanes.nth(n).locator(".lane-label").inner_text() for n in range(1, 4)]
    assert [label.split()[0] for label in labels] == ["research-1", "critic-1", "writer-1"]
    expect(lanes.nth(2)).to_contain_text("critic")
    expect(page.locator("#lanes .mark")).to_have_count(9)  # one per event
    expect(_lane(page, "research-1").locator(".mark")).to_have_count(2)  # spawn and output
    kinds = page.locator("#lanes li.run .mark").evaluate_all("ms => ms.map(m => m.dataset.type)")
    assert kinds == ["workflow_status", "synthesis", "completed"]

    # Durations come from the server's timestamps: spawn to last output, first to last event.
    events = _events(server, workflow_id)
    at = {(e["type"], e.get("agent_id")): _seconds(e["timestamp"]) for e in events}
    run = _seconds(events[-1]["timestamp"]) - _seconds(events[0]["timestamp"])
    for agent_id in ("research-1", "critic-1", "writer-1"):
        expected = at["agent_output", agent_id] - at["agent_spawned", agent_id]
        duration = _lane(page, agent_id).locator(".lane-duration")
        expect(duration).to_have_text(
            _duration_text(float(duration.get_attribute("data-seconds") or "nan"))
        )
        assert float(duration.get_attribute("data-seconds") or "nan") == pytest.approx(
            expected, abs=1e-5
        )
    header = page.locator("#workflow-duration")
    expect(header).not_to_contain_text("so far")
    assert float(header.get_attribute("data-seconds") or "nan") == pytest.approx(run, abs=1e-5)
    expect(header).to_have_text(_duration_text(run))
    expect(page.locator("#lanes li.run .lane-duration")).to_have_text(_duration_text(run))
    expect(page.locator("#timeline-summary")).to_have_text(f"3 agents · {_duration_text(run)}")
    expect(page.locator("#workflow-started")).to_have_text(
        events[0]["timestamp"][:19].replace("T", " ") + " UTC"
    )
    # Bars are placed in CSS from the same numbers: writer-1 starts after research-1.
    starts = [
        _lane(page, agent_id).locator(".span-bar").bounding_box()
        for agent_id in ("research-1", "writer-1")
    ]
    assert starts[0] is not None
    assert starts[1] is not None
    assert starts[0]["x"] <= starts[1]["x"]


def test_clicking_an_agent_shows_its_outputs_alone(server: FelixProcess, page: Page) -> None:
    workflow_id = server.create_workflow()
    server.publish(workflow_id, RESEARCH_RUN[:7])
    page.goto(f"{server.base}/#/workflows/{workflow_id}")
    outputs = page.locator("#outputs li:visible")
    expect(outputs).to_have_count(3)

    critic = page.locator("#lanes").get_by_role("button", name=re.compile(r"^critic-1"))
    expect(critic).to_have_attribute("aria-pressed", "false")
    critic.click()
    expect(critic).to_have_attribute("aria-pressed", "true")
    expect(outputs).to_have_count(1)
    expect(outputs.first).to_contain_text("Paper B's benchmark leaks")
    expect(page.locator("#outputs-filter")).to_contain_text("Only critic-1")
    # Live outputs follow the filter.
    server.publish(workflow_id, {**RESEARCH_RUN[4], "content": "research, later"})
    server.publish(workflow_id, {**RESEARCH_RUN[5], "content": "critic, later"})
    expect(outputs).to_have_count(2)
    expect(outputs.nth(1)).to_have_text(re.compile("critic, later"))
    expect(page.locator("#outputs li")).to_have_count(5)
    critic.click()  # again: all of them
    expect(outputs).to_have_count(5)
    expect(page.locator("#outputs-filter")).to_be_hidden()

    # The agents list filters too, and "Show all" clears it.
    writer = page.locator("#agents").get_by_role("button", name="writer-1")
    writer.click()
    expect(writer).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#lanes [data-pick='writer-1']")).to_have_attribute("aria-pressed", "true")
    expect(outputs).to_have_count(1)
    expect(outputs.first).to_contain_text("Draft: retrieval wins")
    page.get_by_role("button", name="Show all").click()
    expect(outputs).to_have_count(5)
    expect(writer).to_have_attribute("aria-pressed", "false")

    # An agent with no output yet says so rather than showing an empty list.
    server.publish(
        workflow_id,
        {"type": "agent_spawned", "agent_id": "quiet-1", "agent_type": "observer", "spawn_time": 2},
    )
    page.locator("#lanes").get_by_role("button", name=re.compile(r"^quiet-1")).click()
    expect(outputs).to_have_count(0)
    expect(page.locator("#outputs-empty")).to_have_text("No output from quiet-1 yet.")


def test_non_fatal_errors_are_counted_apart_and_a_fatal_one_fails(
    server: FelixProcess, page: Page
) -> None:
    workflow_id = server.create_workflow()
    server.publish(workflow_id, [*RESEARCH_RUN[:2], {"type": "error", "message": "rate limited"}])
    page.goto(f"{server.base}/#/workflows/{workflow_id}")
    banner = page.locator("#errors-banner")
    expect(banner).to_contain_text("1 error")  # from the replay
    server.publish(workflow_id, [RESEARCH_RUN[4], {"type": "error", "message": "<b>retry</b>"}])
    expect(banner).to_contain_text("2 errors")
    expect(page.locator("#outputs li")).to_have_count(1)  # errors are not outputs
    errors = page.locator("#errors li")
    expect(errors.first).to_be_hidden()
    toggle = banner.get_by_role("button", name="show")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(errors).to_have_count(2)
    expect(errors.first).to_contain_text("rate limited")
    expect(errors.nth(1).locator(".content")).to_have_text("<b>retry</b>")
    assert page.locator("#errors b").count() == 0
    expect(banner.get_by_role("button", name="hide")).to_have_attribute("aria-expanded", "true")

    server.publish(workflow_id, {"type": "error", "message": "out of budget", "fatal": True})
    expect(page.locator("#workflow-status")).to_have_text("failed")
    expect(page.locator("#outcome")).to_contain_text("Failed")
    expect(page.locator("#outcome")).to_contain_text("out of budget")
    expect(banner).to_contain_text("2 errors")  # the fatal one is the failure, not counted
    expect(page.locator("#lanes .mark[data-type='error']")).to_have_count(3)


def test_metadata_is_shown_as_text(server: FelixProcess, page: Page) -> None:
    markup = "<img src=x onerror='window.__pwned = 1'>"
    metadata: dict[str, Any] = {
        "owner": "ana",
        "limits": {"tokens": 4000, "tools": ["search", "code"]},
        "markup": markup,
        "retries": 3,
    }
    workflow_id = server.create_workflow(task="With metadata", metadata=metadata)
    page.goto(f"{server.base}/#/workflows/{workflow_id}")
    card = page.locator("#metadata-card")
    expect(card).to_be_visible()
    expect(card.locator("dt")).to_have_text(["owner", "limits", "markup", "retries"])
    values = card.locator("dd")
    expect(values.nth(0)).to_have_text("ana")
    expect(values.nth(1).locator("pre")).to_have_text(json.dumps(metadata["limits"], indent=2))
    expect(values.nth(2)).to_have_text(markup)
    expect(values.nth(3)).to_have_text("3")
    assert card.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_a_long_run_is_drawn_whole(server: FelixProcess, page: Page) -> None:
    # Hundreds of events replayed at once: every one becomes a mark and a log row.
    workflow_id = server.create_workflow()
    agents = [{"type": "agent_spawned", **_agent(f"a{n}")} for n in range(5)]
    outputs = [
        {"type": "agent_output", "agent_id": f"a{n % 5}", "content": f"step {n}", "confidence": 0.5}
        for n in range(495)
    ]
    server.publish(workflow_id, [*agents, *outputs])
    page.goto(f"{server.base}/#/workflows/{workflow_id}")
    expect(page.locator("#log tbody tr")).to_have_count(500)
    expect(page.locator("#lanes .mark")).to_have_count(500)
    expect(page.locator("#lanes > li")).to_have_count(6)
    expect(_lane(page, "a4").locator(".mark")).to_have_count(100)
    expect(page.locator("#outputs li")).to_have_count(495)


def _agent(agent_id: str) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_type": "worker", "spawn_time": 0.0}
