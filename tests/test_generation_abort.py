"""Abort is structured cancellation: partial text kept, stored ``aborted``, upstream closed."""

from __future__ import annotations

import secrets
import threading

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, directive
from tests.support import Socket, User, tokens_of
from tests.support.http import tls

SLOW = directive(tokens=400, rate=40)
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def marker() -> str:
    return f"abort-{secrets.token_hex(4)}"


def stored_reply(user: User, chat_id: str) -> dict:
    with user.client() as client:
        return client.get(f"/api/chats/{chat_id}").json()["messages"][-1]


def _check_aborted(
    user: User, fake: FakeOpenAI, mark: str, frames: list[dict], started: dict
) -> None:
    aborted = frames[-1]
    assert aborted["type"] == "aborted", aborted
    assert aborted["task_id"] == started["task_id"]
    assert aborted["chat_id"] == started["chat_id"]
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert streamed  # it was cut mid-stream, not before
    assert aborted["message"]["content"] == streamed
    assert aborted["message"]["status"] == "aborted"
    assert aborted["message"]["id"] == started["message_id"]
    assert stored_reply(user, started["chat_id"]) == aborted["message"]
    record = fake.find(mark)
    fake.wait_for(lambda: record.disconnected, timeout=5, what="the client hang up")
    assert record.tokens_sent < 400
    assert not record.completed


@pytest.mark.parametrize("by", ["task_id", "chat_id"])
def test_abort_over_the_socket(alice: User, fake_llm: FakeOpenAI, by: str) -> None:
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {SLOW}")
        before = socket.until(lambda f: f["type"] == "token" and f["seq"] >= 2)
        socket.send(action="abort", **{by: started[by]})
        frames = before + socket.until_end(started["task_id"])
    _check_aborted(alice, fake_llm, mark, frames, started)


def test_abort_over_rest(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {SLOW}")
        before = socket.until(lambda f: f["type"] == "token" and f["seq"] >= 2)
        with alice.client() as client:
            response = client.post(f"/api/chats/{started['chat_id']}/abort")
        frames = before + socket.until_end(started["task_id"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task_id"] == started["task_id"]
    assert body["message"] == frames[-1]["message"]
    _check_aborted(alice, fake_llm, mark, frames, started)


def test_abort_from_another_socket_of_the_same_user(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    with Socket(alice) as streaming, Socket(alice) as other:
        started = streaming.start(f"{mark} {SLOW}")
        before = streaming.until(lambda f: f["type"] == "token" and f["seq"] >= 1)
        other.send(action="abort", task_id=started["task_id"])
        told = other.until(lambda f: f["type"] in ("aborted", "error"))[-1]
        frames = before + streaming.until_end(started["task_id"])
    assert told["type"] == "aborted"
    assert told == frames[-1]
    _check_aborted(alice, fake_llm, mark, frames, started)


def test_abort_of_unknown_finished_or_foreign_task_is_not_running(alice: User, bob: User) -> None:
    with Socket(alice) as socket:
        started = socket.start("short one")
        assert socket.until_end(started["task_id"])[-1]["type"] == "done"
        socket.send(action="abort", task_id=started["task_id"])
        finished = socket.recv()
        socket.send(action="abort", task_id=UNKNOWN)
        unknown = socket.recv()
        socket.send(action="abort", chat_id=started["chat_id"])
        idle_chat = socket.recv()
        running = socket.start(f"still going {directive(tokens=60, rate=40)}")
        with Socket(bob) as intruder:
            intruder.send(action="abort", task_id=running["task_id"])
            foreign = intruder.recv()
        assert socket.until_end(running["task_id"])[-1]["type"] == "done"
    answers = [finished, unknown, idle_chat, foreign]
    assert all(a["type"] == "error" and a["code"] == "not_running" for a in answers), answers
    assert len({a["message"] for a in answers}) == 1  # the same answer either way
    with alice.client() as client:
        response = client.post(f"/api/chats/{started['chat_id']}/abort")
    assert response.status_code == 409
    assert response.json()["code"] == "not_running"
    with bob.client() as client:
        assert client.post(f"/api/chats/{started['chat_id']}/abort").status_code == 404


def test_abort_by_chat_id_of_a_chat_not_yours_is_not_found(alice: User, bob: User) -> None:
    """As `subscribe` and `send_message` answer (issue 12): a running reply in another user's
    chat, an idle one and an unknown chat id all get the same `not_found`, over both
    transports, and the reply runs on."""
    with Socket(alice) as owner, Socket(bob) as intruder:
        running = owner.start(f"not bob's {directive(tokens=60, rate=40)}")
        idle = owner.start("idle soon")
        assert owner.until_end(idle["task_id"])[-1]["type"] == "done"
        answers = []
        for chat_id in (running["chat_id"], idle["chat_id"], UNKNOWN):
            intruder.send(action="abort", chat_id=chat_id)
            answers.append(intruder.recv())
        with bob.client() as client:
            rest = [client.post(f"/api/chats/{c}/abort") for c in (running["chat_id"], UNKNOWN)]
        frames = owner.until_end(running["task_id"])
    assert [(a["type"], a["code"], a["chat_id"]) for a in answers] == [
        ("error", "not_found", running["chat_id"]),
        ("error", "not_found", idle["chat_id"]),
        ("error", "not_found", UNKNOWN),
    ]
    assert len({a["message"] for a in answers}) == 1  # nothing tells the three apart
    assert [(r.status_code, r.json()["code"]) for r in rest] == [(404, "not_found")] * 2
    assert frames[-1]["type"] == "done"  # bob's tries stopped nothing


def test_abort_lands_while_the_upstream_streams_flat_out(alice: User, fake_llm: FakeOpenAI) -> None:
    """A burst of chunks must not starve the socket's reader: the abort is seen mid-stream."""
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(tokens=200_000)}")
        before = socket.until(lambda f: f["type"] == "token")
        socket.send(action="abort", task_id=started["task_id"])
        frames = before + socket.until_end(started["task_id"], timeout=60)
    assert frames[-1]["type"] == "aborted"
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, timeout=10, what="the client hang up")
    assert record.tokens_sent < 200_000
    assert frames[-1]["message"]["content"] == "".join(
        t["token"] for t in tokens_of(frames, started["task_id"])
    )


def test_delete_aborts_the_running_generation_first(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {SLOW}")
        socket.until(lambda f: f["type"] == "token")
        with alice.client() as client:
            assert client.delete(f"/api/chats/{started['chat_id']}").status_code == 204
            assert client.get(f"/api/chats/{started['chat_id']}").status_code == 404
        assert socket.until_end(started["task_id"])[-1]["type"] == "aborted"
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, timeout=5, what="the client hang up")
    rows = alice.server.db.query(
        "SELECT count(*) AS n FROM message WHERE chat = ?", started["chat_id"]
    )
    assert rows[0]["n"] == 0


def test_sse_abort(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    with alice.client() as client:
        chat = client.post("/api/chats", json={}).json()
    events: list[tuple[str, str]] = []
    seen_token = threading.Event()

    def read_stream() -> None:
        with (
            httpx.Client(base_url=alice.server.url, timeout=30, verify=tls()) as client,
            client.stream(
                "POST",
                f"/api/chats/{chat['id']}/messages",
                json={"content": f"{mark} {SLOW}"},
                headers={"Authorization": f"Bearer {alice.token}", "Accept": "text/event-stream"},
            ) as response,
        ):
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((kind, line.split(":", 1)[1].strip()))
                    if kind == "token":
                        seen_token.set()

    reader = threading.Thread(target=read_stream)
    reader.start()
    assert seen_token.wait(10)
    with alice.client() as client:
        response = client.post(f"/api/chats/{chat['id']}/abort")
    reader.join(10)
    assert not reader.is_alive(), "the SSE stream did not end after the abort"
    assert response.status_code == 200
    assert events[-1][0] == "aborted"
    assert [k for k, _ in events][:2] == ["message", "started"]
    assert response.json()["message"]["status"] == "aborted"
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, timeout=5, what="the client hang up")
    assert stored_reply(alice, chat["id"])["status"] == "aborted"
