"""Reasoning is kept with the reply (issue 15): stored, returned with the message, saved with
the partial text while the reply streams, kept when it is aborted, and in a ``snapshot``."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, directive
from tests.support import Socket, User, wait_until


def marker() -> str:
    return f"reasoning-{secrets.token_hex(4)}"


def reply_in(user: User, chat_id: str, message_id: str) -> dict[str, Any]:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200, response.text
    return next(m for m in response.json()["messages"] if m["id"] == message_id)


def thoughts_of(frames: list[dict[str, Any]], task_id: str) -> str:
    return "".join(
        f["token"] for f in frames if f["type"] == "reasoning" and f["task_id"] == task_id
    )


@pytest.mark.parametrize("profile", ["vllm", "ollama"])
def test_reasoning_is_stored_and_returned(alice: User, fake_llm: FakeOpenAI, profile: str) -> None:
    """vLLM's `reasoning_content` and Ollama's (and newer vLLM's) `reasoning` field."""
    with Socket(alice) as socket:
        started = socket.start(f"{marker()} {directive(profile=profile, tokens=2, reasoning=3)}")
        frames = socket.until_end(started["task_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert thoughts_of(frames, started["task_id"]) == "r0 r1 r2 "
    assert done["message"]["reasoning"] == "r0 r1 r2 "
    stored = reply_in(alice, started["chat_id"], started["message_id"])
    assert stored == done["message"]
    assert (stored["content"], stored["reasoning"]) == ("t0 t1 ", "r0 r1 r2 ")


def test_a_message_without_reasoning_has_no_reasoning_field(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    """Left out, as `tool_calls` is: existing clients see the message they saw before."""
    with Socket(alice) as socket:
        started = socket.start(f"{marker()} {directive(tokens=2)}")
        frames = socket.until_end(started["task_id"])
    assert frames[-1]["type"] == "done", frames[-1]
    assert "reasoning" not in frames[-1]["message"]
    with alice.client() as client:
        messages = client.get(f"/api/chats/{started['chat_id']}").json()["messages"]
    assert [m for m in messages if "reasoning" in m] == []


def test_the_waiting_rest_route_returns_the_reasoning(alice: User, fake_llm: FakeOpenAI) -> None:
    with alice.client() as client:
        chat_id = client.post("/api/chats", json={}).json()["id"]
        script = directive(profile="vllm", tokens=1, reasoning=2)
        response = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": f"{marker()} {script}"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["message"]["reasoning"] == "r0 r1 "


def test_partial_reasoning_is_saved_in_a_snapshot_and_kept_when_aborted(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    """Mid-reasoning: a second tab's snapshot carries the reasoning so far, the checkpoint
    stores it with the streaming reply, and the aborted reply keeps what was streamed."""
    script = directive(profile="vllm", reasoning=400, rate=40, tokens=5)
    with Socket(alice) as socket, Socket(alice) as other:
        started = socket.start(f"{marker()} {script}")
        task_id = started["task_id"]
        seen = socket.until(lambda f: f["type"] == "reasoning" and f["seq"] >= 3)
        other.send(action="subscribe", chat_id=started["chat_id"])
        snapshot = other.until(lambda f: f["type"] == "snapshot")[-1]
        assert snapshot["task_id"] == task_id
        assert snapshot["content"] == ""
        assert snapshot["reasoning"].startswith(thoughts_of(seen, task_id))
        after = other.until(lambda f: f["type"] == "reasoning")[-1]
        assert after["seq"] == snapshot["seq"] + 1  # no gap, no duplicate

        # The checkpoint (every 0.3 s in tests) saves the reasoning with the streaming reply.
        def checkpointed() -> dict[str, Any] | None:
            reply = reply_in(alice, started["chat_id"], started["message_id"])
            return reply if reply.get("reasoning") else None

        streaming = wait_until(checkpointed, what="the reasoning checkpointed")
        assert streaming["status"] == "streaming"
        assert streaming["reasoning"].startswith("r0 ")  # what was said by the checkpoint
        socket.send(action="abort", task_id=task_id)
        frames = seen + socket.until_end(task_id)
    aborted = frames[-1]
    assert aborted["type"] == "aborted", aborted
    thoughts = thoughts_of(frames, task_id)
    assert aborted["message"]["reasoning"] == thoughts
    assert thoughts.startswith(streaming["reasoning"])
    stored = reply_in(alice, started["chat_id"], started["message_id"])
    assert (stored["status"], stored["reasoning"], stored["content"]) == ("aborted", thoughts, "")
