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

from tests.conftest import (
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    run_async,
    upstream_settings,
)
from tests.fake_openai import FakeOpenAI

#: The old part of the long chat: 2,000 messages of 10,000 characters, 20 MB of text.
OLD_MESSAGES = 2000
OLD_CHARS = 10_000
#: The server may read this much while it answers (the budget is 4,000 characters).
READ_BOUND = 3_000_000


def fill_chat(db: Database, chat_id: str, messages: list[tuple[str, str, datetime]]) -> None:
    """Store ``(role, content, created_at)`` messages in one go, straight into the database."""
    rows = [
        (uuid.uuid4(), uuid.UUID(chat_id), role, content, created_at)
        for role, content, created_at in messages
    ]
    if db.engine == "sqlite":
        connection = sqlite3.connect(db.url.removeprefix("sqlite:///"))
        try:
            with connection:
                connection.executemany(
                    "INSERT INTO message (id, chat, role, content, status, created_at) "
                    "VALUES (?, ?, ?, ?, 'complete', ?)",
                    rows,
                )
        finally:
            connection.close()
        return

    async def insert() -> None:
        connection = await asyncpg.connect(db.url)
        try:
            await connection.executemany(
                "INSERT INTO message (id, chat, role, content, status, created_at) "
                "VALUES ($1, $2, $3, $4, 'complete', $5)",
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


def test_the_newest_message_goes_however_long(spawn_server: Any, fake_llm: FakeOpenAI) -> None:
    server: Server = spawn_server(
        **upstream_settings(fake_llm), CONTEXT_BUDGET_TOKENS="100", TREE_TOOLS="false"
    )
    user = register_and_login(server)
    chat_id = long_chat(user, server.db, ["short one", "short two"])
    question = f"q-{secrets.token_hex(4)} " + "z" * 1000  # over the 400 characters alone
    with Socket(user) as socket:
        socket.send(action="send_message", content=question, chat_id=chat_id)
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
    assert frames[-1]["type"] == "done", frames[-1]
    sent = fake_llm.find(question[:10]).messages
    assert [m["content"] for m in sent[1:]] == [question]
