"""The web client's chat settings panel (issue 16 point 3), in headless Chromium: the
chat's model, system prompt, temperature and length, saved with ``PATCH``; the next reply
goes upstream with them (the fake upstream records the request). Runs on SQLite and
PostgreSQL (through ``server``)."""

from __future__ import annotations

import secrets
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.fake_openai import FakeOpenAI, directive
from tests.support import OTHER_MODEL, Server, User, register_and_login
from tests.test_web_client import ASSISTANT, chat_id_of, log_in, send


def stored_chat(user: User, chat_id: str) -> dict[str, Any]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_settings_panel_changes_what_the_next_reply_is_asked_with(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": "Tuned"}).json()
    log_in(page, server.url, user)
    page.locator("#chat-list button", has_text="Tuned").click()
    expect(page.locator("#chat-title")).to_have_text("Tuned")

    # Opened, it shows the chat as stored: every setting the server's default.
    page.get_by_role("button", name="Settings", exact=True).click()
    panel = page.get_by_role("dialog", name="Chat settings")
    expect(panel).to_be_visible()
    model = panel.get_by_label("Model")
    expect(model).to_be_focused()
    expect(model.locator("option:checked")).to_have_text("Server default (fake-model)")
    expect(panel.get_by_label("Temperature")).to_have_value("")

    # Escape leaves it without saving.
    panel.get_by_label("Temperature").fill("1.1")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    assert stored_chat(user, chat["id"])["temperature"] is None

    # Keyboard only: choose the model, write the prompt, the temperature and the length;
    # Enter in a field saves.
    page.get_by_role("button", name="Settings", exact=True).click()
    expect(model).to_be_focused()
    model.select_option(OTHER_MODEL)
    page.keyboard.press("Tab")
    expect(panel.get_by_label("System prompt")).to_be_focused()
    page.keyboard.type("Answer in one line.")
    page.keyboard.press("Tab")
    page.keyboard.type("0.33")  # any value from 0 to 2, not only steps of 0.05
    page.keyboard.press("Tab")
    page.keyboard.type("64")
    page.keyboard.press("Enter")
    expect(panel).to_be_hidden()
    saved = stored_chat(user, chat["id"])
    assert (saved["model"], saved["temperature"], saved["max_tokens"]) == (OTHER_MODEL, 0.33, 64)
    assert saved["system_prompt"] == "Answer in one line."
    assert saved["top_p"] is None

    mark = f"tuned-{secrets.token_hex(4)}"
    send(page, f"{mark} {directive(tokens=3)}")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    assert chat_id_of(page) == chat["id"]
    [request] = [r for r in fake_llm.records if r.stream and mark in r.last_user_message]
    assert request.model == OTHER_MODEL
    assert request.body["temperature"] == 0.33
    assert request.body["max_tokens"] == 64
    assert "top_p" not in request.body
    assert request.messages[0]["content"].startswith("Answer in one line.")

    # A length over the server's limit: the server's words in the panel, which stays open
    # and changes nothing; emptied, the fields return to the server's defaults.
    page.get_by_role("button", name="Settings", exact=True).click()
    expect(panel.get_by_label("Temperature")).to_have_value("0.33")
    panel.get_by_label("Length (max tokens)").fill("40000")
    panel.get_by_role("button", name="Save", exact=True).click()
    expect(panel.get_by_role("alert")).to_contain_text("LLM_MAX_TOKENS_LIMIT")
    screenshot(page, "web-client-settings")
    expect(panel).to_be_visible()
    assert stored_chat(user, chat["id"])["max_tokens"] == 64
    panel.get_by_label("Length (max tokens)").fill("")
    panel.get_by_label("Temperature").fill("")
    panel.get_by_label("Model").select_option("")
    panel.get_by_role("button", name="Save", exact=True).click()
    expect(panel).to_be_hidden()
    reset = stored_chat(user, chat["id"])
    assert (reset["model"], reset["temperature"], reset["max_tokens"]) == (None, None, None)
    assert reset["system_prompt"] == "Answer in one line."
