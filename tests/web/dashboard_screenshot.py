"""Take the dashboard screenshot shown in the docs (``docs/images/dashboard.png``).

Run from the repository root, with Playwright installed and Debian's chromium::

    python -m tests.web.dashboard_screenshot [docs/images/dashboard.png]

It starts ``felix serve`` on a free port, publishes a small research workflow
over REST, opens its page in headless Chromium and saves the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.web.browser import CHROMIUM, CHROMIUM_ARGS, RESEARCH_RUN, felix_process

DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"


def main(target: Path) -> None:
    """Save a screenshot of a finished workflow's page to ``target``."""
    with felix_process() as server, sync_playwright() as driver:
        for task in ("Index the 2026 benchmark reports", "Triage the support inbox"):
            other = server.create_workflow(task=task)
            server.publish(other, RESEARCH_RUN[:2])
        workflow_id = server.create_workflow(
            workflow_id="research-7", task="Should our agents use retrieval or fine-tuning?"
        )
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, color_scheme="light")
        page.goto(f"{server.base}/#/workflows/{workflow_id}")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        server.publish(workflow_id, RESEARCH_RUN)
        expect(page.locator("#synthesis")).to_contain_text("safer default")
        page.screenshot(path=str(target), full_page=True)
        browser.close()
    print(f"saved {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
