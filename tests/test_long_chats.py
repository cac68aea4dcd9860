"""Long chats (issue 12, point 11): a generation reads only the history its budget holds,
and a chat's messages come in pages."""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from playwright.sync_api import Page, expect

from tests.fake_openai import FakeOpenAI
from tests.support import (
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    run_async,
    upstream_settings,
)
from tests.test_terminal_client import PROMPT, ends_with_status, spawn_client

#: The old part of the long chat: 2,000 messages of 10,000 characters, 20 MB of text.
OLD_MESSAGES = 2000
OLD_CHARS = 10_000
#: The server may read this much while it answers (the budget is 4,000 characters).
READ_BOUND = 3_000_000


def fill_chat(db: Database, chat_id: str, messages: list[tuple[str, str, datetime]]) -> None:
    """Store ``(role, content, created_at)`` messages in one go, straight into the database."""
    ids = [uuid.uuid4() for _ in messages]
    # Each follows the one before, as the server links the messages it stores.
    rows = [
        (ids[i], uuid.UUID(chat_id), ids[i - 1] if i else None, role, content, created_at)
        for i, (role, content, created_at) in enumerate(messages)
    ]
    if db.engine == "sqlite":
        connection = sqlite3.connect(db.url.removeprefix("sqlite:///"))
        try:
            with connection:
                connection.executemany(
                    "INSERT INTO message (id, chat, parent, role, content, status, created_at) "
                    "VALUES (?, ?, ?, ?, ?, 'complete', ?)",
                    rows,
                )
        finally:
            connection.close()
        return

    async def insert() -> None:
        connection = await asyncpg.connect(db.url)
        try:
            await connection.executemany(
                "INSERT INTO message (id, chat, parent, role, content, status, created_at) "
                "VALUES ($1, $2, $3, $4, $5, 'complete', $6)",
                rows,
            )
        finally:
            await connection.close()

    run_async(insert())


def bytes_read(server: Server) -> int:
    """What the server process has read so far, from files and sockets (Linux's ``rchar``)."""
    for line in Path(f"/proc/{server.process.pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/<pid>/io")


def long_chat(user: User, db: Database, recent: list[str]) -> str:
    """A chat of ``OLD_MESSAGES`` long old messages, then ``recent`` short ones."""
    with user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "long"}).json()["id"]
    start = datetime.now(UTC) - timedelta(days=1)
    old = [
        ("user" if i % 2 == 0 else "assistant", f"old-{i} " + "o" * OLD_CHARS, start)
        for i in range(OLD_MESSAGES)
    ]
    old = [(role, text, start + timedelta(seconds=i)) for i, (role, text, _) in enumerate(old)]
    later = start + timedelta(hours=2)
    new = [
        ("user" if i % 2 == 0 else "assistant", text, later + timedelta(seconds=i))
        for i, text in enumerate(recent)
    ]
    fill_chat(db, chat_id, old + new)
    return chat_id


def test_a_generation_reads_only_the_history_its_budget_holds(
    spawn_server: Any, fake_llm: FakeOpenAI
) -> None:
    server: Server = spawn_server(
        **upstream_settings(fake_llm), CONTEXT_BUDGET_TOKENS="1000", TREE_TOOLS="false"
    )
    user = register_and_login(server)
    recent = [f"recent-{i}-{secrets.token_hex(3)} " + "r" * 500 for i in range(5)]
    chat_id = long_chat(user, server.db, recent)
    question = f"q-{secrets.token_hex(4)}"
    before = bytes_read(server)
    with Socket(user) as socket:
        socket.send(action="send_message", content=question, chat_id=chat_id)
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
    read = bytes_read(server) - before
    assert frames[-1]["type"] == "done", frames[-1]
    sent = fake_llm.find(question).messages
    # 4,000 characters of budget: the five recent messages and the question, no old one.
    assert [m["content"] for m in sent[1:]] == [*recent, question]
    assert sent[0]["role"] == "system"
    # The chat holds 20 MB; answering reads a small part of it (a page of sizes at most).
    assert read < READ_BOUND, f"the server read {read} bytes to answer"


def test_the_newest_message_goes_when_no_older_one_fits(
    serve_app: Any, fake_llm: FakeOpenAI
) -> None:
    server: Server = serve_app(
        **upstream_settings(fake_llm), CONTEXT_BUDGET_TOKENS="100", TREE_TOOLS="false"
    )
    user = register_and_login(server)
    chat_id = long_chat(user, server.db, ["o" * 100, "p" * 100])
    # With the system prompt, nearly all of the 400 characters: no room for an older one.
    # (A message over the budget on its own is refused: tests/test_context_overflow.py.)
    question = f"q-{secrets.token_hex(4)} " + "z" * 340
    with Socket(user) as socket:
        socket.send(action="send_message", content=question, chat_id=chat_id)
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
    assert frames[-1]["type"] == "done", frames[-1]
    sent = fake_llm.find(question[:10]).messages
    assert [m["content"] for m in sent[1:]] == [question]


def test_a_chat_comes_with_its_newest_messages_and_a_cursor_to_older_ones(
    server: Server, fresh_user: User
) -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with fresh_user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "paged"}).json()["id"]
        fill_chat(
            server.db,
            chat_id,
            [("user", f"m{i}", start + timedelta(seconds=i)) for i in range(250)],
        )
        chat = client.get(f"/api/chats/{chat_id}").json()
        assert [m["content"] for m in chat["messages"]] == [f"m{i}" for i in range(150, 250)]
        collected, cursor = chat["messages"], chat["messages_next_cursor"]
        while cursor:
            page = client.get(
                f"/api/chats/{chat_id}/messages", params={"limit": 60, "before": cursor}
            ).json()
            collected = page["items"] + collected
            cursor = page["next_cursor"]
        assert [m["content"] for m in collected] == [f"m{i}" for i in range(250)]
        small = client.get(f"/api/chats/{chat_id}", params={"limit": 3}).json()
        assert [m["content"] for m in small["messages"]] == ["m247", "m248", "m249"]
        assert small["messages_next_cursor"] is not None
        too_many = client.get(f"/api/chats/{chat_id}", params={"limit": 201})
        assert too_many.status_code == 400, too_many.text
        short_id = client.post("/api/chats", json={"title": "short"}).json()["id"]
        short = client.get(f"/api/chats/{short_id}").json()
    assert short["messages"] == []
    assert short["messages_next_cursor"] is None


def test_the_web_client_opens_a_long_chat_at_its_end_and_shows_older_messages_on_demand(
    server: Server, fresh_user: User, page: Page
) -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with fresh_user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "long"}).json()["id"]
    fill_chat(
        server.db,
        chat_id,
        [("user", f"message {i}", start + timedelta(seconds=i)) for i in range(130)],
    )
    page.goto(server.url)
    page.get_by_label("Username").fill(fresh_user.username)
    page.get_by_label("Password").fill(fresh_user.password)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    page.goto(f"{server.url}/#/chat/{chat_id}")
    shown = page.locator("#messages .message .body")
    expect(shown).to_have_count(100)
    expect(shown.first).to_have_text("message 30")
    expect(shown.last).to_have_text("message 129")
    page.get_by_role("button", name="Show older messages").click()
    expect(shown).to_have_count(130)
    expect(shown.first).to_have_text("message 0")
    expect(shown.last).to_have_text("message 129")
    expect(page.get_by_role("button", name="Show older messages")).to_have_count(0)


def test_the_terminal_client_opens_a_long_chat_with_its_newest_messages(
    server: Server, fresh_user: User, tmp_path: Path
) -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with fresh_user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "Long"}).json()["id"]
    fill_chat(
        server.db,
        chat_id,
        [("user", f"message {i}", start + timedelta(seconds=i)) for i in range(130)],
    )
    child = spawn_client(
        tmp_path, "--url", server.url, "--chat", chat_id, CHATSVC_TOKEN=fresh_user.token
    )
    child.expect_exact("Chat: Long  (over 50 messages; /history shows the last 50)")
    child.expect_exact(PROMPT)
    child.sendline("/history")
    child.expect_exact("(older messages not shown: the last 50 follow)")
    child.expect_exact("message 80")
    child.expect_exact("message 129")
    child.expect_exact("---")
    child.sendeof()
    ends_with_status(child, 0)
