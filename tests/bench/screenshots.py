"""The web client's screenshots in the README: light and dark themes, and a narrow screen.

Run: ``uv run python tests/bench/screenshots.py`` (about 30 s). Starts a real server with
the built-in echo provider on a fresh SQLite database (as the tests do), makes a small
chat, and saves ``chat-light.png`` and ``chat-dark.png`` (1280x800) and
``chat-narrow.png`` (375x740, dark) into ``docs/screenshots/``, through Debian's
Chromium (``tests/browser.py``). ``optipng``, when installed, makes them smaller.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from playwright.sync_api import Browser, ViewportSize, expect, sync_playwright

from tests.browser import FLAGS, chromium_path
from tests.support import Database, User, register_and_login, start_server
from tests.support.databases import migrate_database
from tests.test_web_client import ASSISTANT, log_in, send

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "screenshots"
QUESTION = (
    "How do I print the numbers 0 to 2 in Python?\n\n"
    "A `for` loop does it:\n\n```python\nfor i in range(3):\n    print(i)\n```\n\n"
    "Each number goes on its own line."
)
SHOTS: list[tuple[str, str, ViewportSize]] = [  # file, color scheme, viewport
    ("chat-light.png", "light", {"width": 1280, "height": 800}),
    ("chat-dark.png", "dark", {"width": 1280, "height": 800}),
    ("chat-narrow.png", "dark", {"width": 375, "height": 740}),
]


def shoot(browser: Browser, url: str, user: User, chat_url: str) -> None:
    for name, scheme, viewport in SHOTS:
        context = browser.new_context(
            viewport=viewport,
            color_scheme="dark" if scheme == "dark" else "light",
            device_scale_factor=1,
        )
        page = context.new_page()
        log_in(page, url, user)
        page.goto(chat_url)
        expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
        page.locator("#message-input").focus()
        page.wait_for_timeout(300)  # fonts and the last frame drawn
        page.screenshot(path=str(OUT / name))
        context.close()
        print(OUT / name)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database("sqlite", f"sqlite:///{tmp}/screenshots.db")
        migrate_database(db)
        server = start_server(db, Path(tmp), fresh_interpreter=True, ECHO_TOKEN_DELAY="0.002")
        try:
            user = register_and_login(server, "ada")
            with user.client() as client:
                for title in ("Release checklist", "Trip to Lisbon", "Reading list"):
                    client.post("/api/chats", json={"title": title}).raise_for_status()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium_path(), headless=True, args=FLAGS
                )
                context = browser.new_context()
                page = context.new_page()
                log_in(page, server.url, user)
                send(page, QUESTION)
                expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
                page.wait_for_url("**/#/chat/*")
                chat_url = page.url
                context.close()
                shoot(browser, server.url, user, chat_url)
                browser.close()
        finally:
            server.stop()
    if shutil.which("optipng"):
        pngs = [str(OUT / name) for name, _, _ in SHOTS]
        subprocess.run(["optipng", "-quiet", "-o2", *pngs], check=True)


if __name__ == "__main__":
    main()
