"""Generations over the WebSocket (docs/protocol.md sections 4.1 and 4.2), from the fake
upstream."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from chatsvc.api.ws import WRITER_LINGER_SECONDS
from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    TERMINAL,
    UPSTREAM_KEY,
    AppServer,
    Server,
    Socket,
    User,
    register_and_login,
    tokens_of,
    upstream_settings,
    wait_until,
)


def marker() -> str:
    return f"m-{secrets.token_hex(4)}"


def stored_chat(user: User, chat_id: str) -> dict:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_happy_path(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    content = f"Hello {mark} {directive(tokens=12)}"
    with Socket(alice) as socket:
        socket.send(action="send_message", content=content, request_id="req-1")
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["chat_created", "message", "started"], kinds
    assert kinds[-1] == "done", frames[-1]
    created, user_message, started, done = frames[0], frames[1], frames[2], frames[-1]
    assert created["request_id"] == user_message["request_id"] == started["request_id"] == "req-1"
    chat_id = created["chat"]["id"]
    assert created["chat"]["title"].startswith("Hello")
    assert user_message["message"]["content"] == content
    assert user_message["message"]["chat_id"] == chat_id
    task_id = started["task_id"]
    tokens = tokens_of(frames, task_id)
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert all(t["chat_id"] == chat_id for t in tokens)
    text = "".join(t["token"] for t in tokens)
    assert text == Script(tokens=12).expected_text()
    reply = done["message"]
    assert reply["content"] == text
    assert reply["id"] == started["message_id"]
    assert reply["status"] == "complete"
    assert reply["model"] == "fake-model"
    assert done["finish_reason"] == "stop"
    record = fake_llm.find(mark)
    assert done["usage"] == {
        "prompt_tokens": done["usage"]["prompt_tokens"],
        "completion_tokens": 12,
        "estimated": False,  # the upstream's own figures (issue 16)
    }
    assert done["usage"]["prompt_tokens"] > 0
    assert record.body["stream"] is True
    assert record.body["stream_options"] == {"include_usage": True}
    assert record.model == "fake-model"

    history = stored_chat(alice, chat_id)["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == content
    assert history[1] == reply
    assert history[1]["usage"] == done["usage"]


def test_a_socket_idle_past_its_writer_s_linger_gets_every_later_frame(alice: User) -> None:
    """A socket's writer ends once nothing was sent for ``WRITER_LINGER_SECONDS`` (an idle
    socket holds no task); the next frame starts another: a ``pong``, then a whole reply
    whose tokens keep that writer busy."""
    with Socket(alice) as socket:
        time.sleep(WRITER_LINGER_SECONDS + 1)
        socket.send(action="ping")
        assert socket.recv()["type"] == "pong"
        started = socket.start(f"{marker()} {directive(tokens=20, rate=50)}")
        frames = socket.until_end(started["task_id"])
        assert frames[-1]["type"] == "done", frames[-1]
        tokens = tokens_of(frames, started["task_id"])
        assert [t["seq"] for t in tokens] == list(range(len(tokens)))
        assert "".join(t["token"] for t in tokens) == Script(tokens=20).expected_text()


def test_message_in_an_existing_chat(alice: User) -> None:
    with alice.client() as client:
        chat = client.post("/api/chats", json={"title": "existing"}).json()
    with Socket(alice) as socket:
        socket.send(action="send_message", content="hi", chat_id=chat["id"], request_id="r2")
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
    assert [f["type"] for f in frames[:2]] == ["message", "started"]
    assert frames[-1]["type"] == "done"
    assert frames[-1]["chat_id"] == chat["id"]
    assert stored_chat(alice, chat["id"])["updated_at"] > chat["updated_at"]


def test_history_and_system_prompt_reach_the_upstream(alice: User, fake_llm: FakeOpenAI) -> None:
    first, second = marker(), marker()
    with alice.client() as client:
        chat = client.post("/api/chats", json={"system_prompt": "You are a pirate."}).json()
    with Socket(alice) as socket:
        for mark in (first, second):
            socket.send(action="send_message", content=f"q {mark}", chat_id=chat["id"])
            assert socket.until(lambda f: f["type"] in ("done", "error"))[-1]["type"] == "done"
    record = fake_llm.find(second)
    # One system message, first: the prompt, then the workspace tree (test_tree_tools.py).
    system = record.messages.pop(0)
    assert system["role"] == "system"
    prompt, tree = system["content"].split("\n\n", 1)
    assert prompt == "You are a pirate."
    assert "workspace tree" in tree
    assert all(m["role"] != "system" for m in record.messages)
    assert record.messages == [
        {"role": "user", "content": f"q {first}"},
        {"role": "assistant", "content": Script().expected_text()},
        {"role": "user", "content": f"q {second}"},
    ]


def test_default_system_prompt(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    with Socket(alice) as socket:
        socket.send(action="send_message", content=mark)
        socket.until(lambda f: f["type"] in ("done", "error"))
    first = fake_llm.find(mark).messages[0]
    assert first["role"] == "system"
    assert first["content"].startswith("You are a helpful assistant.\n\n")  # then the tree


def test_history_is_trimmed_to_the_budget(serve_app, fake_llm: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    # Without the tree tools, whose tree turn would take part of this small budget.
    server: Server = serve_app(
        **upstream_settings(fake_llm), CONTEXT_BUDGET_TOKENS="100", TREE_TOOLS="false"
    )
    user = register_and_login(server)
    old, new = marker(), marker()
    with Socket(user) as socket:
        socket.send(action="send_message", content=f"{old} " + "x" * 300)
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
        chat_id = frames[-1]["chat_id"]
        socket.send(action="send_message", content=f"{new} " + "y" * 300, chat_id=chat_id)
        socket.until(lambda f: f["type"] in ("done", "error"))
    messages = fake_llm.find(new).messages
    assert messages[0]["role"] == "system"
    assert messages[-1]["content"].startswith(new)
    assert not any(old in m["content"] for m in messages)  # 400 chars of budget: no room
    # The short reply to it would fit, but the history starts with a user message: strict
    # chat templates (Gemma's, Mistral's) refuse one that starts with the assistant.
    assert [m["role"] for m in messages] == ["system", "user"]


def test_reasoning_deltas_become_reasoning_events(alice: User) -> None:
    with Socket(alice) as socket:
        socket.send(action="send_message", content=f"think {directive(tokens=3, reasoning=2)}")
        frames = socket.until(lambda f: f["type"] in ("done", "error"))
    done = frames[-1]
    assert done["type"] == "done"
    streamed = [f for f in frames if f["type"] in ("token", "reasoning")]
    assert [f["seq"] for f in streamed] == list(range(len(streamed)))  # one gapless sequence
    assert "".join(f["token"] for f in streamed if f["type"] == "reasoning") == "r0 r1 "
    assert done["message"]["content"] == "t0 t1 t2 "


def test_two_generations_on_one_socket_stay_apart(alice: User) -> None:
    with Socket(alice) as socket:
        socket.send(
            action="send_message", content=f"a {directive(tokens=15, rate=100)}", request_id="a"
        )
        socket.send(
            action="send_message", content=f"b {directive(tokens=25, rate=100)}", request_id="b"
        )
        frames: list[dict] = []
        ended: dict[str, dict] = {}
        while len(ended) < 2:
            frame = socket.recv()
            frames.append(frame)
            if frame["type"] in ("done", "error", "aborted"):
                ended[frame["task_id"]] = frame
    started = {f["request_id"]: f for f in frames if f["type"] == "started"}
    assert set(started) == {"a", "b"}
    assert started["a"]["chat_id"] != started["b"]["chat_id"]
    for request_id, count in (("a", 15), ("b", 25)):
        task_id = started[request_id]["task_id"]
        tokens = tokens_of(frames, task_id)
        assert [t["seq"] for t in tokens] == list(range(len(tokens)))
        assert {t["chat_id"] for t in tokens} == {started[request_id]["chat_id"]}
        assert ended[task_id]["type"] == "done"
        assert ended[task_id]["message"]["content"] == Script(tokens=count).expected_text()
        assert "".join(t["token"] for t in tokens) == ended[task_id]["message"]["content"]


def test_closing_the_socket_does_not_cancel(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    socket = Socket(alice)
    started = socket.start(f"{mark} {directive(tokens=20, rate=40)}")
    socket.until(lambda f: f["type"] == "token")
    socket.close()
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.completed, timeout=10, what="the stream completed")
    assert record.tokens_sent == 20

    def ended() -> dict[str, Any] | None:
        reply = stored_chat(alice, started["chat_id"])["messages"][-1]
        return reply if reply["status"] != "streaming" else None

    reply = wait_until(ended, what="the reply to end")
    assert reply["status"] == "complete"
    assert reply["content"] == Script(tokens=20).expected_text()


def test_malformed_frames_mid_stream_leave_the_stream_untouched(alice: User) -> None:
    with Socket(alice) as socket:
        started = socket.start(f"x {directive(tokens=30, rate=60)}")
        socket.until(lambda f: f["type"] == "token")
        bad = [
            "not json",
            "[1, 2]",
            json.dumps({"action": "dance"}),
            json.dumps({"action": "send_message"}),
            json.dumps(
                {"action": "send_message", "content": "x", "chat_id": "nope", "request_id": "r9"}
            ),
            json.dumps({"action": "abort"}),
            json.dumps({"action": "abort", "task_id": 5}),
            json.dumps({"action": "ping", "extra": True}),
        ]
        for frame in bad:
            socket.send_raw(frame)
        socket.send_raw(b"\x00binary")
        frames = socket.until_end(started["task_id"])
    errors = [f for f in frames if f["type"] == "error" and f.get("task_id") is None]
    assert len(errors) == len(bad) + 1
    assert {e["code"] for e in errors} == {"invalid_message"}
    assert all(e["message"] for e in errors)
    assert any(e["request_id"] == "r9" and "chat_id" in e["message"] for e in errors)
    assert frames[-1]["type"] == "done"
    tokens = tokens_of(frames, started["task_id"])
    # Tokens before the garbage were read by `start`/`until`; the seq stays gapless from there.
    seqs = [t["seq"] for t in tokens]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert frames[-1]["message"]["content"] == Script(tokens=30).expected_text()


def test_busy_and_not_found_and_too_large(alice: User, bob: User) -> None:
    with Socket(alice) as socket:
        started = socket.start(f"long {directive(tokens=40, rate=50)}")
        socket.send(
            action="send_message", content="again", chat_id=started["chat_id"], request_id="b1"
        )
        busy = socket.until(lambda f: f["type"] == "error")[-1]
        assert busy["code"] == "busy"
        assert busy["request_id"] == "b1"
        assert busy["chat_id"] == started["chat_id"]
        socket.send(action="send_message", content="x" * 16_001, request_id="big")
        too_large = socket.until(lambda f: f["type"] == "error")[-1]
        assert too_large["code"] == "too_large"
        assert too_large["request_id"] == "big"
        frames = socket.until_end(started["task_id"])
        assert frames[-1]["type"] == "done"
    with Socket(bob) as socket:
        socket.send(action="send_message", content="mine now", chat_id=started["chat_id"])
        error = socket.recv()
        assert error["type"] == "error"
        assert error["code"] == "not_found"
    history = stored_chat(alice, started["chat_id"])["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        f"long {directive(tokens=40, rate=50)}"
    ]


def test_per_user_cap(fresh_user: User) -> None:
    with Socket(fresh_user) as socket:
        running = [socket.start(f"n{i} {directive(tokens=400, rate=20)}") for i in range(3)]
        socket.send(action="send_message", content="one too many", request_id="cap")
        error = socket.until(lambda f: f["type"] == "error")[-1]
        assert error["code"] == "rate_limited"
        assert error["request_id"] == "cap"
        for started in running:
            socket.send(action="abort", task_id=started["task_id"])
            socket.until(
                lambda f, s=started: f["type"] == "aborted" and f["task_id"] == s["task_id"]
            )
        # With the slots free again, a new one starts.
        again = socket.start("after the cap")
        assert socket.until_end(again["task_id"])[-1]["type"] == "done"


def test_echo_provider(serve_app) -> None:  # type: ignore[no-untyped-def]
    server: AppServer = serve_app(ECHO_TOKEN_DELAY="0.001")
    assert "echo" in server.log()
    assert "NOT an LLM" in server.log()
    user = register_and_login(server)
    with Socket(user) as socket:
        started = socket.start("hello out there")
        frames = socket.until_end(started["task_id"])
    done = frames[-1]
    assert done["type"] == "done"
    assert done["message"]["content"] == "Echo: hello out there"
    assert (
        "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
        == done["message"]["content"]
    )
    assert done["usage"]["completion_tokens"] == 4


def test_upstream_failures_end_with_an_error_and_keep_what_streamed(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    with Socket(alice) as socket:
        refused = socket.start(f"down {directive(status=503)}")
        refused_frames = socket.until_end(refused["task_id"])
        dropped = socket.start(f"drop {directive(tokens=10, drop_after=4)}")
        dropped_frames = socket.until_end(dropped["task_id"])
    error = refused_frames[-1]
    assert error["type"] == "error"
    assert error["code"] == "llm_unavailable"
    assert error["chat_id"] == refused["chat_id"]
    assert "UPSTREAM-BODY" not in json.dumps(refused_frames)
    broken = dropped_frames[-1]
    assert broken["type"] == "error"
    assert broken["code"] == "llm_error"
    assert broken["task_id"] == dropped["task_id"]
    refused_history = stored_chat(alice, refused["chat_id"])["messages"]
    assert refused_history[0]["role"] == "user"
    assert refused_history[1]["status"] == "failed"
    assert refused_history[1]["content"] == ""
    dropped_reply = stored_chat(alice, dropped["chat_id"])["messages"][1]
    assert dropped_reply["status"] == "failed"
    assert dropped_reply["content"] == "t0 t1 t2 t3 "
    assert dropped_reply["content"] == "".join(
        t["token"] for t in tokens_of(dropped_frames, dropped["task_id"])
    )
    assert UPSTREAM_KEY not in alice.server.log()


def test_partial_text_is_checkpointed_while_streaming(alice: User) -> None:
    """The server under test saves every 0.3 s: the stored row follows the stream."""
    with Socket(alice) as socket:
        started = socket.start(f"save me {directive(tokens=60, rate=30)}")
        frames = socket.until(lambda f: f["type"] == "token" and f["seq"] >= 25)
        rows = alice.server.db.query(
            "SELECT status, content FROM message WHERE id = ?", started["message_id"]
        )
        socket.send(action="abort", task_id=started["task_id"])
        frames += socket.until_end(started["task_id"])
    # The checkpoint may be ahead of what this socket had read when it looked (tokens
    # still on their way), never off the stream: it is a prefix of what was relayed.
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert rows[0]["status"] == "streaming"
    assert rows[0]["content"]
    assert streamed.startswith(rows[0]["content"])


def test_replies_streaming_at_once_are_checkpointed_together(alice: User) -> None:
    """One checkpoint statement saves every running reply, each with its own text."""
    with Socket(alice) as socket:
        started = [socket.start(f"save {i} {directive(tokens=60, rate=30)}") for i in range(3)]
        tasks = {s["task_id"]: s for s in started}
        socket.until(lambda f: f["type"] == "token" and f["seq"] >= 25)

        def checkpointed() -> dict[str, dict[str, Any]] | None:
            rows = {
                task: alice.server.db.query(
                    "SELECT status, content FROM message WHERE id = ?", s["message_id"]
                )[0]
                for task, s in tasks.items()
            }
            return rows if all(row["content"] for row in rows.values()) else None

        rows = wait_until(checkpointed, what="a checkpoint of every reply")
        for task in tasks:
            socket.send(action="abort", task_id=task)
        ended: set[str] = set()

        def all_ended(frame: dict) -> bool:
            if frame["type"] in TERMINAL and frame.get("task_id") in tasks:
                ended.add(frame["task_id"])
            return ended == set(tasks)

        socket.until(all_ended)
    # Every frame: the first tokens of a reply may come before a later `started`.
    frames = socket.received
    for task, row in rows.items():
        streamed = "".join(t["token"] for t in tokens_of(frames, task))
        assert row["status"] == "streaming"
        assert row["content"]
        assert streamed.startswith(row["content"]), (row, streamed)
