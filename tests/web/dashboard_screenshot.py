"""Take the dashboard screenshots shown in the docs (``docs/images/dashboard*.png``).

Run from the repository root, with Playwright installed and Debian's chromium::

    python -m tests.web.dashboard_screenshot [docs/images]

It starts ``felix serve`` on a free port, publishes a small research workflow
over REST with pauses between its events (so that its timeline has some
length; this is a script, not a test, and may sleep), opens its page in
headless Chromium and saves ``dashboard.png``; then saves the list of
workflows, searched, as ``dashboard-list.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect, sync_playwright

from tests.web.browser import CHROMIUM, CHROMIUM_ARGS, RESEARCH_RUN, FelixProcess, felix_process

DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "images"

#: (pause before, event): the research run of ``RESEARCH_RUN`` spread over a few seconds,
#: with a second output from the researcher and a non-fatal error on the way.
TIMED_RUN: list[tuple[float, dict[str, Any]]] = [
    (0.0, RESEARCH_RUN[0]),
    (0.2, RESEARCH_RUN[1]),
    (0.3, RESEARCH_RUN[2]),
    (0.8, RESEARCH_RUN[3]),
    (0.6, RESEARCH_RUN[4]),
    (0.5, {"type": "error", "message": "critic-1: search API timed out; retrying once"}),
    (0.7, RESEARCH_RUN[5]),
    (
        0.4,
        {
            "type": "agent_output",
            "agent_id": "research-1",
            "content": "A fourth study (2026) confirms the gap on fresh facts: 9 points.",
            "confidence": 0.77,
        },
    ),
    (0.9, RESEARCH_RUN[6]),
    (0.5, RESEARCH_RUN[7]),
    (0.3, {"type": "completed", "result": {"recommendation": "retrieval", "papers": 4}}),
]

METADATA = {"requested_by": "ana@example.com", "model": "small-2026", "budget": {"usd": 2.5}}


def _publish_others(server: FelixProcess) -> None:
    for task, events in [
        ("Index the 2026 benchmark reports", [*RESEARCH_RUN[:2], {"type": "completed"}]),
        ("Triage the support inbox", RESEARCH_RUN[:2]),
        ("Summarise last week's incidents", [{"type": "error", "message": "x", "fatal": True}]),
        ("Draft the release notes", []),
    ]:
        other = server.create_workflow(task=task)
        if events:
            server.publish(other, events)


def _workflow_page(page: Page, server: FelixProcess, target: Path) -> None:
    workflow_id = server.create_workflow(
        workflow_id="research-7",
        task="Should our agents use retrieval or fine-tuning?",
        metadata=METADATA,
    )
    page.goto(f"{server.base}/#/workflows/{workflow_id}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    for pause, event in TIMED_RUN:
        time.sleep(pause)
        server.publish(workflow_id, event)
    expect(page.locator("#connection")).to_have_attribute("data-state", "finished")
    expect(page.locator("#errors-banner")).to_contain_text("1 error")
    page.screenshot(path=str(target), full_page=True)


def _list_page(page: Page, server: FelixProcess, target: Path) -> None:
    page.goto(f"{server.base}/#/?q=the")
    expect(page.locator("#list-summary")).to_contain_text("match")
    page.screenshot(path=str(target), full_page=True)


def main(folder: Path) -> None:
    """Save ``dashboard.png`` (one workflow) and ``dashboard-list.png`` in ``folder``."""
    with felix_process() as server, sync_playwright() as driver:
        _publish_others(server)
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="light")
        _workflow_page(page, server, folder / "dashboard.png")
        page.set_viewport_size({"width": 1280, "height": 560})
        _list_page(page, server, folder / "dashboard-list.png")
        browser.close()
    print(f"saved dashboard.png and dashboard-list.png in {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
