"""Fixtures the browser tests share: one Playwright driver and one Chromium per module.

Playwright is imported only when a test asks for it, so that the rest of
tests/web runs (and the browser modules skip with a reason) without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.web.browser import CHROMIUM, CHROMIUM_ARGS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """A Playwright driver for the module's tests (its sync API: no Trio here)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's headless Chromium, closed after the module's tests."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
