"""The database under a burst, and a database too slow to write (issue 11).

- A burst: many WebSocket clients of several users send at the same instant,
  twice each in the same chat. No `internal` error; every reply ends stored in
  a final status; a refusal under overload is `overloaded` with a retry hint,
  and the message then goes through when sent again.
- A slow database: another connection holds the write lock past the server's
  write deadline while a reply ends. The reply's end is tried again in the
  background and lands once the lock goes: stored whole, announced once. A
  message sent meanwhile is refused with `overloaded`, never `internal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    TERMINAL,
    AppServer,
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    tokens_of,
    upstream_settings,
)

FINAL = {"complete", "aborted", "failed"}
REFUSALS = {"overloaded", "rate_limited", "busy"}

BURST_CLIENTS = 200
BURST_USERS = 20
MESSAGES_PER_CHAT = 3
RESENDS = 20  # a refused message is sent again, at most this often


@dataclass
class ClientLog:
    """What one bursting client saw."""

    errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)
    task_ids: list[str] = field(default_factory=list)
    retry_hints: list[float | None] = field(default_factory=list)


async def _next(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(60):
        return json.loads(await ws.recv())


async def _send_until_started(
    ws: ClientConnection, content: str, chat_id: str | None, log: ClientLog
) -> dict[str, Any]:
    """Send, and again after each deliberate refusal, until the reply starts."""
    for _ in range(RESENDS):
        frame: dict[str, Any] = {"action": "send_message", "content": content}
        if chat_id is not None:
            frame["chat_id"] = chat_id
        await ws.send(json.dumps(frame))
        while True:
            event = await _next(ws)
            if event["type"] == "started":
                return event
            if event["type"] == "error":
                break
        if event["code"] not in REFUSALS:
            log.errors[event["code"]] += 1
            raise AssertionError(f"send_message failed: {event}")
        log.refusals[event["code"]] += 1
        log.retry_hints.append(event.get("retry_after"))
        await asyncio.sleep(event.get("retry_after") or 0.5)
    raise AssertionError(f"still refused after {RESENDS} tries")


class _Gate:
    """Opens once every client has connected (or one has failed to)."""

    def __init__(self, clients: int) -> None:
        self.waiting = clients
        self.all_ready = asyncio.Event()
        self.go = asyncio.Event()

    def ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_ready.set()


async def _bursting_client(
    server: Server, user: User, gate: _Gate, index: int, log: ClientLog
) -> None:
    url = f"{server.ws_url}?token={user.token}"
    async with connect(url, max_size=None, open_timeout=60) as ws:
        assert (await _next(ws))["type"] == "ready"
        gate.ready()
        await gate.go.wait()
        chat_id: str | None = None
        for message in range(MESSAGES_PER_CHAT):
            content = f"burst {index}.{message} {directive(tokens=5, rate=50)}"
            started = await _send_until_started(ws, content, chat_id, log)
            chat_id = started["chat_id"]
            log.task_ids.append(started["task_id"])
            while True:
                event = await _next(ws)
                if event.get("task_id") == started["task_id"] and event["type"] in TERMINAL:
                    break
            log.ends[event["type"]] += 1
            if event["type"] == "error":
                log.errors[event["code"]] += 1


async def _burst(server: Server, users: list[User]) -> list[ClientLog]:
    """Every client connects; once all are ready, all send at the same instant."""
    gate = _Gate(BURST_CLIENTS)
    logs = [ClientLog() for _ in range(BURST_CLIENTS)]
    clients = [
        asyncio.create_task(_bursting_client(server, users[i % len(users)], gate, i, logs[i]))
        for i in range(BURST_CLIENTS)
    ]
    all_ready = asyncio.create_task(gate.all_ready.wait())
    # Every client ready, or one failed to connect (its error comes out of the gather below).
    done, _ = await asyncio.wait(
        [all_ready, *clients], timeout=60, return_when=asyncio.FIRST_COMPLETED
    )
    all_ready.cancel()
    if not done:
        raise TimeoutError("the clients did not connect within 60 s")
    gate.go.set()
    await asyncio.wait_for(asyncio.gather(*clients), 120)
    return logs


@pytest.fixture
def burst_server(spawn_server: Callable[..., Server], fake_llm: FakeOpenAI) -> Server:
    return spawn_server(
        **upstream_settings(fake_llm),
        MAX_CONCURRENT_GENERATIONS=str(BURST_CLIENTS),
        DATABASE_WRITE_TIMEOUT="2",
    )


async def test_burst_of_clients_sending_at_once(burst_server: Server) -> None:
    users = [register_and_login(burst_server) for _ in range(BURST_USERS)]

    logs = await _burst(burst_server, users)

    errors = sum((log.errors for log in logs), Counter())
    assert errors == Counter(), f"errors other than deliberate refusals: {errors}"
    ends = sum((log.ends for log in logs), Counter())
    assert ends == Counter(done=BURST_CLIENTS * MESSAGES_PER_CHAT)
    hints = [hint for log in logs for hint in log.retry_hints]
    assert all(hint is not None and hint > 0 for hint in hints), hints
    task_ids = [task for log in logs for task in log.task_ids]
    assert len(set(task_ids)) == BURST_CLIENTS * MESSAGES_PER_CHAT
    rows = burst_server.db.query("SELECT status, role, content, chat FROM message")
    replies = [row for row in rows if row["role"] == "assistant"]
    assert len(replies) == BURST_CLIENTS * MESSAGES_PER_CHAT  # refused sends stored nothing
    assert Counter(row["status"] for row in replies) == Counter(complete=len(replies))
    assert all(row["content"] == "t0 t1 t2 t3 t4 " for row in replies)
    per_chat = Counter(row["chat"] for row in rows)
    assert sorted(set(per_chat.values())) == [2 * MESSAGES_PER_CHAT]
    assert len(per_chat) == BURST_CLIENTS


# --- a database too slow to write ---------------------------------------------------------

WRITE_DEADLINE = 1.0
LOCK_SECONDS = 3 * WRITE_DEADLINE


@contextlib.contextmanager
def write_lock_held(db: Database) -> Iterator[Callable[[], None]]:
    """Another connection holds the write lock on the messages until ``release()`` (or the end)."""
    release = threading.Event()
    taken = threading.Event()
    failure: list[BaseException] = []

    def hold_sqlite() -> None:
        connection = sqlite3.connect(db.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(60)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    async def hold_postgres() -> None:
        connection = await asyncpg.connect(db.url)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE message IN EXCLUSIVE MODE")
                taken.set()
                await asyncio.to_thread(release.wait, 60)
        finally:
            await connection.close()

    def hold() -> None:
        try:
            if db.engine == "sqlite":
                hold_sqlite()
            else:
                asyncio.run(hold_postgres())  # this thread's own loop
        except BaseException as exc:
            failure.append(exc)
            taken.set()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10)
    assert not failure, failure
    try:
        yield release.set
    finally:
        release.set()
        holder.join(10)
    assert not failure, failure


@pytest.fixture
def slow_write_server(serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI) -> Server:
    return serve_app(**upstream_settings(fake_llm), DATABASE_WRITE_TIMEOUT=str(WRITE_DEADLINE))


def test_reply_end_lands_after_the_database_was_too_slow(slow_write_server: Server) -> None:
    server = slow_write_server
    user = register_and_login(server)
    with Socket(user) as socket, Socket(user) as other:
        started = socket.start(f"slow {directive(tokens=12, rate=20)}")
        task_id, chat_id = started["task_id"], started["chat_id"]
        first = socket.until(lambda f: f["type"] == "token" and f["task_id"] == task_id)
        with user.client() as http:
            other_chat = http.post("/api/chats", json={"title": "another"}).json()["id"]
        with write_lock_held(server.db):
            # The reply ends while the lock is held: its end cannot be stored in time.
            time.sleep(WRITE_DEADLINE + 0.6 + 0.5)
            # A new message meanwhile is refused as retryable, and stores nothing.
            other.send(action="send_message", content="meanwhile", request_id="r1")
            refused = other.until(lambda f: f.get("request_id") == "r1", timeout=15)[-1]
            assert refused["type"] == "error", refused
            assert refused["code"] == "overloaded", refused
            assert refused["retry_after"] > 0
            # The same over REST: 503 `overloaded` with Retry-After.
            with user.client() as http:
                answer = http.post(
                    f"/api/chats/{other_chat}/messages", json={"content": "meanwhile, by REST"}
                )
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "overloaded"
            assert int(answer.headers["retry-after"]) >= 1
            time.sleep(max(0.0, LOCK_SECONDS - 2 * WRITE_DEADLINE))
        frames = first + socket.until_end(task_id, timeout=30)
        # Nothing else ends the reply after that.
        with contextlib.suppress(TimeoutError):
            frames += socket.until(lambda f: False, timeout=2)

    ends = [f for f in frames if f.get("task_id") == task_id and f["type"] in ("done", "error")]
    assert [f["type"] for f in ends] == ["done"], ends
    streamed = "".join(f["token"] for f in tokens_of(frames, task_id))
    assert streamed == "".join(f"t{i} " for i in range(12))
    assert ends[0]["message"]["content"] == streamed
    assert ends[0]["message"]["status"] == "complete"
    rows = server.db.query(
        "SELECT role, status, content FROM message WHERE chat = ? ORDER BY created_at",
        uuid.UUID(chat_id),
    )
    assert [(r["role"], r["status"]) for r in rows] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert rows[1]["content"] == ends[0]["message"]["content"]
    refused_rows = server.db.query("SELECT id FROM message WHERE chat = ?", uuid.UUID(other_chat))
    assert refused_rows == []  # the refused sends stored nothing
    assert "trying again" in server.log()


# --- a COMMIT slower than the write deadline ----------------------------------------------

#: Every message whose content holds this makes its transaction's COMMIT this slow.
SLOW_COMMIT = "slow-commit"
COMMIT_SECONDS = 2 * WRITE_DEADLINE + 1.0  # past the last-resort deadline (twice the timeout)


@pytest.mark.postgres_only
def test_a_commit_slower_than_the_deadline_lands_and_is_told_so(
    slow_write_server: Server,
) -> None:
    """The write deadline never cuts a COMMIT: one cancelled in flight may land all the
    same, and a send told ``overloaded`` would leave its reply ``streaming`` (its chat busy
    until a restart). A deferred trigger makes the COMMIT outlast the deadline: the send
    starts and its reply ends stored, as if the database had been quick."""
    server = slow_write_server
    server.db.query(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({COMMIT_SECONDS}); RETURN NULL; END $$"
    )
    server.db.query(
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON message "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        f"WHEN (NEW.content LIKE '%{SLOW_COMMIT}%') EXECUTE FUNCTION slow_commit()"
    )
    user = register_and_login(server)
    with Socket(user) as socket:
        sent_at = time.monotonic()
        started = socket.start(f"{SLOW_COMMIT} {directive(tokens=3)}")
        assert time.monotonic() - sent_at >= COMMIT_SECONDS  # the COMMIT was that slow
        frames = socket.until_end(started["task_id"])
    assert frames[-1]["type"] == "done", frames[-1]
    rows = server.db.query(
        "SELECT role, status FROM message WHERE chat = ? ORDER BY created_at",
        uuid.UUID(started["chat_id"]),
    )
    assert [(r["role"], r["status"]) for r in rows] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]


#: Every message whose content holds this makes its INSERT this slow (the body of the write).
SLOW_INSERT = "slow-insert"


@pytest.mark.postgres_only
def test_a_write_cut_by_the_deadline_leaves_nothing_behind(slow_write_server: Server) -> None:
    """A send whose INSERT outlasts the write deadline is refused ``overloaded``, stores
    nothing, and the next send on the same socket starts as usual. (Cut by the deadline
    too, the ROLLBACK and the release of the connection did not run: the next write of
    the socket ran inside the dead transaction, saw its own uncommitted reply, and was
    refused ``busy``, again and again.)"""
    server = slow_write_server
    server.db.query(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({COMMIT_SECONDS}); RETURN NEW; END $$"
    )
    server.db.query(
        "CREATE TRIGGER slow_insert BEFORE INSERT ON message FOR EACH ROW "
        f"WHEN (NEW.content LIKE '%{SLOW_INSERT}%') EXECUTE FUNCTION slow_insert()"
    )
    user = register_and_login(server)
    with Socket(user) as socket:
        started = socket.start("first")
        socket.until_end(started["task_id"])
        chat_id = started["chat_id"]
        socket.send(action="send_message", chat_id=chat_id, content=SLOW_INSERT, request_id="r1")
        refused = socket.until(lambda f: f.get("request_id") == "r1", timeout=30)[-1]
        assert refused["type"] == "error", refused
        assert refused["code"] == "overloaded", refused
        again = socket.start(f"again {directive(tokens=3)}", chat_id=chat_id)
        frames = socket.until_end(again["task_id"])
    assert frames[-1]["type"] == "done", frames[-1]
    rows = server.db.query(
        "SELECT content, status FROM message WHERE chat = ? AND role = 'user' ORDER BY created_at",
        uuid.UUID(chat_id),
    )
    assert [r["content"] for r in rows] == ["first", f"again {directive(tokens=3)}"]
