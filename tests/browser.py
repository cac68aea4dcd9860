"""Headless Chromium for the browser tests: Debian's, driven by Playwright.

Playwright's own browser download does not work offline, so the tests launch
the system's: ``CHROMIUM`` if set, else Debian's ``chromium-headless-shell``,
else its ``chromium`` (``.ci/run`` installs both). The headless shell is what
Playwright itself runs for headless Chromium: the same engine without the
desktop browser around it, and it drove the web client tests for less than
half the CPU (tests/test_web_client.py: 17.8 s against 40.1 s, measured with
both installed). Screenshots and traces go to ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: Debian's two headless Chromiums, the lighter first.
CHROMIUMS = ("chromium-headless-shell", "chromium")


def chromium_path() -> str:
    found = (shutil.which(name) for name in CHROMIUMS)
    path = os.environ.get("CHROMIUM") or next((p for p in found if p), "/usr/bin/chromium")
    if not Path(path).exists():
        pytest.fail(
            f"no Chromium at {path}: install Debian's chromium-headless-shell (.ci/run does)"
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module.

    Playwright's sync API keeps its event loop marked running in this thread until it
    stops; pytest-asyncio cannot start a test's loop meanwhile, so the browser stops at the
    end of each module that uses it (a module mixing the two would need its own plan).
    """
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies, no storage) and one page in it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
