"""``POST /api/chats/{id}/messages``: Server-Sent Events, or one answer at the end."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx

from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import User, wait_until
from tests.support.http import tls


def marker() -> str:
    return f"rest-{secrets.token_hex(4)}"


def new_chat(user: User) -> str:
    with user.client() as client:
        return client.post("/api/chats", json={}).json()["id"]


def read_sse(user: User, chat_id: str, content: str, limit: int | None = None) -> list[dict]:
    """The events of one SSE response (stops reading after ``limit`` events if given)."""
    events: list[dict] = []
    with (
        httpx.Client(base_url=user.server.url, timeout=30, verify=tls()) as client,
        client.stream(
            "POST",
            f"/api/chats/{chat_id}/messages",
            json={"content": content},
            headers={"Authorization": f"Bearer {user.token}", "Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                assert data["type"] == kind
                events.append(data)
                if limit is not None and len(events) >= limit:
                    break
    return events


def test_sse_happy_path(alice: User) -> None:
    chat_id = new_chat(alice)
    events = read_sse(alice, chat_id, f"sse {directive(tokens=9)}")
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message", "started"]
    assert kinds[-1] == "done"
    assert set(kinds[2:-1]) == {"token"}
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    done = events[-1]
    assert done["message"]["content"] == "".join(t["token"] for t in tokens)
    assert done["message"]["content"] == Script(tokens=9).expected_text()
    with alice.client() as client:
        stored = client.get(f"/api/chats/{chat_id}").json()["messages"]
    assert stored[-1] == done["message"]


def test_sse_client_disconnect_does_not_cancel(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    chat_id = new_chat(alice)
    events = read_sse(alice, chat_id, f"{mark} {directive(tokens=20, rate=40)}", limit=4)
    assert events[-1]["type"] == "token"
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.completed, timeout=10, what="the stream completed")
    assert record.tokens_sent == 20
    with alice.client() as client:

        def ended() -> dict[str, Any] | None:
            reply = client.get(f"/api/chats/{chat_id}").json()["messages"][-1]
            return reply if reply["status"] != "streaming" else None

        reply = wait_until(ended, what="the reply to end")
    assert reply["status"] == "complete"
    assert reply["content"] == Script(tokens=20).expected_text()


def test_waiting_route_answers_with_the_whole_reply(alice: User) -> None:
    chat_id = new_chat(alice)
    with alice.client() as client:
        response = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": f"wait {directive(tokens=7)}"}
        )
        stored = client.get(f"/api/chats/{chat_id}").json()["messages"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["chat_id"] == chat_id
    assert body["message"]["content"] == Script(tokens=7).expected_text()
    assert body["message"]["status"] == "complete"
    assert body["message_id"] == body["message"]["id"]
    assert stored[-1] == body["message"]
    assert stored[-2]["content"] == f"wait {directive(tokens=7)}"


def test_rest_errors(alice: User, bob: User) -> None:
    chat_id = new_chat(alice)
    with alice.client() as client:
        too_large = client.post(f"/api/chats/{chat_id}/messages", json={"content": "x" * 16_001})
        empty = client.post(f"/api/chats/{chat_id}/messages", json={"content": ""})
        blank = client.post(f"/api/chats/{chat_id}/messages", json={"content": "   "})
        down = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": f"down {directive(status=500)}"}
        )
    assert too_large.status_code == 413
    assert too_large.json()["code"] == "too_large"
    assert empty.status_code == 400
    assert "content" in empty.json()["detail"]
    assert blank.status_code == 400
    assert down.status_code == 503
    assert down.json()["code"] == "llm_unavailable"
    assert "scripted failure" not in down.text
    with bob.client() as client:
        foreign = client.post(f"/api/chats/{chat_id}/messages", json={"content": "hi"})
        foreign_sse = client.post(
            f"/api/chats/{chat_id}/messages",
            json={"content": "hi"},
            headers={"Accept": "text/event-stream"},
        )
    assert foreign.status_code == foreign_sse.status_code == 404


def test_busy_over_rest(alice: User) -> None:
    chat_id = new_chat(alice)
    with httpx.Client(base_url=alice.server.url, timeout=30, verify=tls()) as client:
        headers = {"Authorization": f"Bearer {alice.token}", "Accept": "text/event-stream"}
        with client.stream(
            "POST",
            f"/api/chats/{chat_id}/messages",
            json={"content": f"slow {directive(tokens=40, rate=40)}"},
            headers=headers,
        ) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("event: started"))
            with alice.client() as other:
                busy = other.post(f"/api/chats/{chat_id}/messages", json={"content": "again"})
            assert busy.status_code == 409
            assert busy.json()["code"] == "busy"
            assert any(line == "event: done" for line in lines)
