"""A real process stopped by a real signal, or killed, mid-stream: nothing is lost."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    Database,
    Socket,
    register_and_login,
    start_server,
    tokens_of,
    upstream_settings,
    wait_until,
)

STREAMS = 20


def _stream_until_closed(socket: Socket, received: dict[str, str], started: dict) -> None:
    """Read one socket's reply until the server closes the socket."""
    frames: list[dict] = []
    try:
        while True:
            frames.append(socket.recv(timeout=30))
    except ConnectionClosed as closed:
        received["close_code"] = str(closed.rcvd.code if closed.rcvd else None)
    received["text"] = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))


def test_sigterm_interrupts_replies_and_keeps_what_clients_received(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path: Path,
    fake_llm: FakeOpenAI,
) -> None:
    server = start_server(
        make_database(engine, migrated=True),
        tmp_path,
        **upstream_settings(fake_llm),
        MAX_CONCURRENT_GENERATIONS="100",
        SHUTDOWN_TIMEOUT="10",
    )
    try:
        user = register_and_login(server)
        sockets = [Socket(user) for _ in range(STREAMS)]
        starts = [
            s.start(f"long {i} {directive(tokens=2000, rate=20)}") for i, s in enumerate(sockets)
        ]
        for socket in sockets:
            socket.until(lambda f: f["type"] == "token")
        received: list[dict[str, str]] = [{} for _ in sockets]
        readers = [
            threading.Thread(target=_stream_until_closed, args=(s, r, st))
            for s, r, st in zip(sockets, received, starts, strict=True)
        ]
        for reader in readers:
            reader.start()
        time.sleep(0.5)
        stopping = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=20)
        stopped_in = time.monotonic() - stopping
        for reader in readers:
            reader.join(10)
    finally:
        server.stop()
    # uvicorn stops cleanly, then re-raises the signal it caught, as a process should.
    assert server.process.returncode in (0, -signal.SIGTERM), server.log()
    assert "Application shutdown complete" in server.log()
    assert stopped_in < 12, stopped_in
    assert {r["close_code"] for r in received} == {"1012"}
    rows = {
        str(row["id"]): row
        for row in server.db.query(
            "SELECT id, status, content FROM message WHERE role = 'assistant'"
        )
    }
    assert len(rows) == STREAMS
    for started, got in zip(starts, received, strict=True):
        row = rows[started["message_id"]]
        assert row["status"] == "interrupted", row
        # The tokens read by `start`/`until` before the reader thread took over are not in
        # `got`, so the stored text ends with what the reader saw, and holds all of it.
        assert got["text"], "the stream was cut before the signal"
        assert row["content"].endswith(got["text"]), (row["content"][-80:], got["text"][-80:])
    assert "stopped 20 running replies as interrupted" in server.log()
    assert server.log().count("generation interrupted") == STREAMS  # the audit log says so


def test_after_kill_9_no_reply_stays_streaming(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path: Path,
    fake_llm: FakeOpenAI,
) -> None:
    db = make_database(engine, migrated=True)
    settings = {**upstream_settings(fake_llm), "INSTANCE_LEASE_SECONDS": "1"}
    server = start_server(db, tmp_path, **settings)
    try:
        user = register_and_login(server)
        with Socket(user) as socket:
            started = socket.start(f"crash {directive(tokens=2000, rate=40)}")
            frames = socket.until(lambda f: f["type"] == "token" and f["seq"] >= 40)
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
    finally:
        server.stop()
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    row = db.query("SELECT status, content FROM message WHERE id = ?", started["message_id"])[0]
    assert row["status"] == "streaming"  # the crash left it so
    assert row["content"]  # ...with the text of the last checkpoint
    restarted = start_server(db, tmp_path, **settings)
    try:  # once the crashed process's lease has run out, the new one interrupts its reply
        deadline = time.monotonic() + 15
        while True:
            rows = db.query("SELECT id, status, content FROM message WHERE role = 'assistant'")
            if rows[0]["status"] != "streaming" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        restarted.stop()
    assert [r["status"] for r in rows] == ["interrupted"]
    assert rows[0]["content"] == row["content"]
    assert streamed.startswith(rows[0]["content"])
    assert "now interrupted" in restarted.log()


def test_alone_after_kill_9_the_restarted_instance_recovers_at_once(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path: Path,
    fake_llm: FakeOpenAI,
) -> None:
    """Without a shared event bus an instance is the only one: when it starts again after
    a crash, the replies left `streaming` are `interrupted` before it answers, with no wait
    for the crashed lease to run out (a long one here: a slow restart cannot outlast it)."""
    db = make_database(engine, migrated=True)
    settings = {
        **upstream_settings(fake_llm),
        "CHECKPOINT_SECONDS": "0.2",
        "INSTANCE_LEASE_SECONDS": "600",
    }
    server = start_server(db, tmp_path, **settings)
    try:
        user = register_and_login(server)
        with Socket(user) as socket:
            started = socket.start(f"crash {directive(tokens=2000, rate=40)}")
            socket.until(lambda f: f["type"] == "token" and f["seq"] >= 20)
            wait_until(
                lambda: db.query("SELECT content FROM message WHERE id = ?", started["message_id"])[
                    0
                ]["content"],
                what="a checkpoint of the reply",
            )
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
    finally:
        server.stop()
    left = db.query("SELECT status, content FROM message WHERE id = ?", started["message_id"])[0]
    assert left["status"] == "streaming"  # the crash left it so
    restarted = start_server(db, tmp_path, **settings)
    try:
        with Socket(replace(user, server=restarted)) as socket:  # the same token works here
            again = socket.start(f"again {directive(tokens=3)}", chat_id=started["chat_id"])
            assert socket.until_end(again["task_id"])[-1]["type"] == "done"
        row = db.query("SELECT status, content FROM message WHERE id = ?", started["message_id"])
        assert row[0]["status"] == "interrupted"
        assert row[0]["content"] == left["content"]
    finally:
        restarted.stop()
    assert "now interrupted" in restarted.log()
