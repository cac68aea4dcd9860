"""The web client's feedback, export and import (issue 17), in headless Chromium: thumbs
up and down (aria-pressed) and a comment on a reply, the chat downloaded as JSON and
Markdown, and ChatGPT's conversations.json imported with its report shown. Runs on
SQLite and PostgreSQL (through ``server``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.support import Server, User, register_and_login
from tests.test_web_client import ASSISTANT, log_in

DATA = Path(__file__).parent / "data"


def feedback_of(user: User, chat_id: str) -> dict[str, Any] | None:
    with user.client() as client:
        messages = client.get(f"/api/chats/{chat_id}").json()["messages"]
    return messages[-1].get("feedback")


def test_rate_a_reply_export_the_chat_and_import_a_chatgpt_file(
    server: Server, page: Page, tmp_path: Path
) -> None:
    user = register_and_login(server)
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": "Rated in the browser"}).json()
        sent = client.post(f"/api/chats/{chat['id']}/messages", json={"content": "hello"})
        assert sent.status_code == 200, sent.text
    log_in(page, server.url, user)
    page.locator("#chat-list button", has_text="Rated in the browser").click()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")

    good = reply.get_by_role("button", name="Good reply")
    bad = reply.get_by_role("button", name="Bad reply")
    expect(good).to_have_attribute("aria-pressed", "false")
    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    expect(bad).to_have_attribute("aria-pressed", "false")
    assert feedback_of(user, chat["id"])["rating"] == "up"

    reply.get_by_role("button", name="Add a comment").click()
    dialog = page.get_by_role("dialog", name="Comment on this reply")
    dialog.get_by_label("Comment (optional)").fill("Short and right.")
    dialog.get_by_role("button", name="Save").click()
    expect(reply.locator(".rating .comment")).to_have_text("Short and right.")
    assert feedback_of(user, chat["id"]) == {
        **feedback_of(user, chat["id"]),  # its times
        "rating": "up",
        "comment": "Short and right.",
    }

    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_attribute("aria-pressed", "false")
    assert feedback_of(user, chat["id"])["comment"] == "Short and right."  # kept
    bad.click()  # pressed again: taken back
    expect(bad).to_have_attribute("aria-pressed", "false")
    assert feedback_of(user, chat["id"]) is None
    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    # After a reload, as stored.
    page.reload()
    expect(page.locator(ASSISTANT).last.get_by_role("button", name="Good reply")).to_have_attribute(
        "aria-pressed", "true"
    )

    with page.expect_download() as downloading:
        page.get_by_role("button", name="Export JSON").click()
    download = downloading.value
    assert download.suggested_filename == "Rated-in-the-browser.json"
    saved = tmp_path / "chat.json"
    download.save_as(saved)
    exported = json.loads(saved.read_text())
    assert exported["format"] == "chatsvc.export"
    assert exported["chat"]["messages"][-1]["feedback"]["rating"] == "up"
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Export Markdown").click()
    assert downloading.value.suggested_filename == "Rated-in-the-browser.md"
    download_md = tmp_path / "chat.md"
    downloading.value.save_as(download_md)
    assert download_md.read_text().startswith("# Rated in the browser\n")

    page.set_input_files("#import-file", DATA / "chatgpt-conversations.json")
    report = page.locator("#import-report")
    expect(report).to_contain_text("Imported 2 chats.")
    expect(report).to_contain_text("Trip to Lisbon: 1 message left out: a tool message")
    expect(report).to_contain_text("Only a system prompt: chat skipped: no text message")
    page.locator("#chat-list button", has_text="Trip to Lisbon").click()
    expect(page.locator(ASSISTANT).last).to_contain_text("25 minutes by tram 15")
    screenshot(page, "web-client-import")

    page.set_input_files("#import-file", DATA / "chatgpt-conversations.json")
    expect(report).to_contain_text("Imported 2 chats.")
    broken = tmp_path / "broken.json"
    broken.write_text('{"hello": "world"}')
    page.set_input_files("#import-file", broken)
    expect(report).to_contain_text("Nothing was imported: chat 0: neither a chatsvc export")
