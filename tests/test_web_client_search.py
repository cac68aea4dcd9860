"""The web client's search box (issue 17), in headless Chromium: typing lists the search's
hits (chat title, snippet with the matched words in <mark>, server text as text only);
clicking a hit opens its chat on the hit's branch, scrolled to and highlighting the message.
Runs on SQLite and PostgreSQL (through ``server``)."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.support import Server, insert_message, register_and_login
from tests.test_web_client import ASSISTANT, log_in


def test_a_hit_on_another_branch_opens_that_branch(page: Page, server: Server) -> None:
    user = register_and_login(server)
    key = "k" + secrets.token_hex(6)
    with user.client() as client:
        created = client.post("/api/chats", json={"title": f"Trip {key} plans"})
    assert created.status_code == 201, created.text
    chat_id = created.json()["id"]
    question = insert_message(server.db, chat_id, "Which train?")
    first = insert_message(server.db, chat_id, "The first answer", role="assistant")
    other = uuid.uuid4()
    server.db.query(
        "INSERT INTO message (id, chat, parent, role, content, status, created_at) "
        "VALUES (?, ?, ?, 'assistant', ?, 'complete', ?)",
        other,
        uuid.UUID(chat_id),
        uuid.UUID(question),
        f"Take the <b>night</b> train {key} to Vienna",
        datetime.now(UTC) + timedelta(seconds=1),
    )
    # The first answer is the branch shown: the hit is on the other one.
    server.db.query(
        "UPDATE chat SET active_leaf = ? WHERE id = ?", uuid.UUID(first), uuid.UUID(chat_id)
    )
    another = register_and_login(server)  # never sees it
    with another.client() as client:
        assert client.get("/api/search", params={"q": key}).json()["items"] == []

    log_in(page, server.url, user)
    page.get_by_label("Search chats").fill(key)
    hits = page.locator("#chat-list li")
    expect(hits).to_have_count(2)
    message_hit = page.locator(f"#chat-list li[data-message='{other}']")
    expect(message_hit.locator("mark")).to_have_text(key)
    expect(message_hit.locator(".hit-snippet")).to_have_text(
        f"Take the <b>night</b> train {key} to Vienna"
    )
    expect(message_hit.locator("b")).to_have_count(0)  # server text is never markup
    title_hit = page.locator("#chat-list li:not([data-message])")
    expect(title_hit.locator(".hit-title")).to_have_text(f"Trip {key} plans")
    expect(title_hit.locator("mark")).to_have_text(key)
    screenshot(page, "search-hits")

    message_hit.locator("button").click()
    shown = page.locator(f"{ASSISTANT}[data-id='{other}']")
    expect(shown).to_have_class(re.compile(r"\bsearch-hit\b"), timeout=10_000)
    expect(shown).to_be_in_viewport()
    expect(page.locator(f"{ASSISTANT}[data-id='{first}']")).to_have_count(0)
    assert page.url.endswith(f"#/chat/{chat_id}")
    screenshot(page, "search-jump")

    page.get_by_label("Search chats").fill("")
    expect(page.locator("#chat-list li[data-id] .hit-title")).to_have_count(0)
    expect(page.locator(f"#chat-list li[data-id='{chat_id}']")).to_have_count(1)
