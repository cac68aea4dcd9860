"""Conversations as trees (issue 15; docs/protocol.md section 3.1): regenerate, edit and
resend, branches, and starting a chat in one call, over the WebSocket, REST and SSE, on
real servers and both engines."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    PG_ADMIN_URL,
    AppServer,
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    start_server,
    tokens_of,
    upstream_settings,
)

ENDS = ("done", "aborted", "error")


def mark() -> str:
    return f"tree-{secrets.token_hex(4)}"


def exchange(socket: Socket, content: str, **fields: Any) -> list[dict[str, Any]]:
    """Send a message and read every frame up to the reply's end (or the refusal)."""
    socket.send(action="send_message", content=content, **fields)
    return socket.until(lambda f: f["type"] in ENDS)


def regenerate(socket: Socket, chat_id: str, message_id: str, **fields: Any) -> list[dict]:
    socket.send(action="regenerate", chat_id=chat_id, message_id=message_id, **fields)
    return socket.until(lambda f: f["type"] in ENDS)


def of_type(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [f for f in frames if f["type"] == kind]
    assert len(found) == 1, (kind, frames)
    return found[0]


def branch(user: User, chat_id: str) -> list[dict[str, Any]]:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def whole_tree(user: User, chat_id: str) -> list[dict[str, Any]]:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}/messages", params={"all": "true"})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def place(message: dict[str, Any]) -> tuple[int, int]:
    """``(sibling_index, sibling_count)``; both are left out of a message with no siblings
    but itself, and ``sibling_index`` when it is 0 (the defaults are omitted)."""
    return message.get("sibling_index", 0), message.get("sibling_count", 1)


def upstream_turns(fake: FakeOpenAI, marker: str, nth: int = -1) -> list[tuple[str, str]]:
    """The (role, content) turns a request carrying ``marker`` sent upstream, system left out."""
    record = fake.wait_for(lambda: fake.records_for(marker)[nth:] or None)[0]
    return [(m["role"], m["content"]) for m in record.messages if m["role"] != "system"]


def two_exchanges(socket: Socket) -> tuple[str, list[dict[str, Any]]]:
    """A chat of U1 A1 U2 A2 (complete replies); its id and the four messages."""
    first = exchange(socket, f"U1 {mark()}")
    chat_id = of_type(first, "chat_created")["chat"]["id"]
    second = exchange(socket, f"U2 {mark()}", chat_id=chat_id)
    messages = [
        of_type(first, "message")["message"],
        of_type(first, "done")["message"],
        of_type(second, "message")["message"],
        of_type(second, "done")["message"],
    ]
    return chat_id, messages


# --- regenerate ----------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["complete", "failed", "aborted", "interrupted"])
def test_regenerate_after_each_terminal_status(
    alice: User, fake_llm: FakeOpenAI, server: Server, ending: str
) -> None:
    """A reply that ended any way is generated again: a sibling answering the same user
    message with the same history, made the active branch; the first stays as it was."""
    word = mark()
    script = {
        "complete": {"tokens": 3},
        "failed": {"status": 500, "fail_times": 1},  # the second try of these messages works
        "aborted": {"tokens": 20, "rate": 40},
        "interrupted": {"tokens": 3},
    }[ending]
    with Socket(alice) as socket:
        chat_id, before = two_exchanges(socket)
        socket.send(action="send_message", content=f"{word} {directive(**script)}", chat_id=chat_id)
        started = socket.until(lambda f: f["type"] == "started")[-1]
        if ending == "aborted":
            socket.until(lambda f: f["type"] == "token")
            socket.send(action="abort", task_id=started["task_id"])
        end = socket.until_end(started["task_id"])[-1]
        first = next(m for m in whole_tree(alice, chat_id) if m["id"] == started["message_id"])
        if ending == "interrupted":  # as a server that stopped mid-reply leaves it
            server.db.query(
                "UPDATE message SET status = 'interrupted' WHERE id = ?",
                uuid.UUID(started["message_id"]),
            )
            first = {**first, "status": "interrupted"}
        assert first["status"] == ending, (end, first)
        question = first["parent_id"]

        frames = regenerate(socket, chat_id, started["message_id"], request_id="again")
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["chat_updated", "started"], kinds
    assert kinds[-1] == "done", frames[-1]
    updated, again, done = frames[0], frames[1], frames[-1]
    assert updated["request_id"] == again["request_id"] == "again"
    assert updated["chat"]["active_leaf_id"] == again["message_id"]
    reply = done["message"]
    assert reply["id"] == again["message_id"] != started["message_id"]
    assert reply["status"] == "complete"
    assert reply["parent_id"] == question
    assert reply["sibling_ids"] == [started["message_id"], reply["id"]]
    assert place(reply) == (1, 2)
    # The same history went upstream, ending with the same user message.
    records = fake_llm.records_for(word)
    assert len(records) >= 2
    assert records[-1].messages == records[0].messages
    assert [m["role"] for m in records[-1].messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    # The active branch ends with the new reply; the first one is kept, untouched.
    shown = branch(alice, chat_id)
    assert [m["id"] for m in shown] == [m["id"] for m in before] + [question, reply["id"]]
    kept = next(m for m in whole_tree(alice, chat_id) if m["id"] == started["message_id"])
    assert kept["status"] == ending
    assert kept["content"] == first["content"]
    assert place(kept) == (0, 2)


def test_regenerate_while_a_reply_runs_is_busy(alice: User) -> None:
    with Socket(alice) as socket:
        chat_id, messages = two_exchanges(socket)
        started = socket.start(f"{mark()} {directive(tokens=400, rate=40)}", chat_id=chat_id)
        socket.until(lambda f: f["type"] == "token")
        for target in (started["message_id"], messages[3]["id"]):
            socket.send(
                action="regenerate", chat_id=chat_id, message_id=target, request_id="r-busy"
            )
            refused = socket.until(lambda f: f["type"] == "error" and f.get("task_id") is None)
            assert refused[-1]["code"] == "busy", refused[-1]
            assert refused[-1]["request_id"] == "r-busy"
            assert refused[-1]["chat_id"] == chat_id
        with alice.client() as client:
            response = client.post(f"/api/chats/{chat_id}/messages/{messages[3]['id']}/regenerate")
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "busy"
        socket.send(action="abort", task_id=started["task_id"])
        assert socket.until_end(started["task_id"])[-1]["type"] == "aborted"
    assert len(whole_tree(alice, chat_id)) == 6  # nothing stored for the refused ones


def test_an_aborted_regenerate_keeps_the_earlier_sibling_untouched(alice: User) -> None:
    with Socket(alice) as socket:
        chat_id, messages = two_exchanges(socket)
        earlier = messages[3]
        socket.send(action="regenerate", chat_id=chat_id, message_id=earlier["id"])
        started = socket.until(lambda f: f["type"] == "started")[-1]
        socket.send(action="abort", chat_id=chat_id)
        end = socket.until_end(started["task_id"])[-1]
    # The fake's default script is 5 quick tokens: the abort may come after the end.
    assert end["type"] in ("aborted", "done"), end
    tree = {m["id"]: m for m in whole_tree(alice, chat_id)}
    kept = tree[earlier["id"]]
    assert kept["content"] == earlier["content"]
    assert kept["status"] == "complete"
    assert kept["completed_at"] == earlier["completed_at"]
    assert kept["sibling_ids"] == [earlier["id"], started["message_id"]]
    assert tree[started["message_id"]]["parent_id"] == earlier["parent_id"]
    assert branch(alice, chat_id)[-1]["id"] == started["message_id"]


def test_regenerate_refuses_what_is_not_a_reply_of_the_chat(alice: User, bob: User) -> None:
    with Socket(alice) as socket:
        chat_id, messages = two_exchanges(socket)
        other_chat, other = two_exchanges(socket)
        cases = [
            (messages[2]["id"], "invalid_message"),  # a user message
            (str(uuid.uuid4()), "not_found"),
            (other[1]["id"], "not_found"),  # a reply of another chat
        ]
        for message_id, code in cases:
            socket.send(action="regenerate", chat_id=chat_id, message_id=message_id)
            refused = socket.recv()
            assert refused["type"] == "error", refused
            assert refused["code"] == code, (message_id, refused)
        socket.send(action="regenerate", chat_id=chat_id, message_id="nope")
        assert socket.recv()["code"] == "invalid_message"
    with bob.client() as client:
        response = client.post(f"/api/chats/{chat_id}/messages/{messages[1]['id']}/regenerate")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    with alice.client() as client:
        bad = client.post(f"/api/chats/{chat_id}/messages/not-a-uuid/regenerate")
        assert bad.status_code == 400, bad.text
        user_message = client.post(f"/api/chats/{chat_id}/messages/{messages[0]['id']}/regenerate")
        assert user_message.status_code == 400, user_message.text
        assert user_message.json()["code"] == "invalid_message"
    assert len(whole_tree(alice, chat_id)) == 4
    assert len(whole_tree(alice, other_chat)) == 4


def test_regenerate_over_rest_waiting_and_as_server_sent_events(alice: User) -> None:
    with Socket(alice) as socket:
        chat_id, messages = two_exchanges(socket)
    target = messages[3]["id"]
    with alice.client() as client:
        waited = client.post(f"/api/chats/{chat_id}/messages/{target}/regenerate")
        assert waited.status_code == 200, waited.text
        answer = waited.json()
        assert answer["chat_id"] == chat_id
        assert answer["message"]["status"] == "complete"
        assert answer["message"]["id"] == answer["message_id"]
        assert place(answer["message"]) == (1, 2)
        with client.stream(
            "POST",
            f"/api/chats/{chat_id}/messages/{target}/regenerate",
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _sse(stream)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["chat_updated", "started"], kinds
    assert kinds[-1] == "done"
    done = events[-1][1]["message"]
    assert done["sibling_ids"][0] == target
    assert place(done) == (2, 3)
    assert [m["id"] for m in branch(alice, chat_id)][-1] == done["id"]


def _sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    kind = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind is not None:
            events.append((kind, json.loads(line.split(":", 1)[1])))
    return events


# --- edit and resend, branches -------------------------------------------------------------


def test_edit_and_resend_sends_exactly_the_branch_upstream(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    with Socket(alice) as socket:
        chat_id, (u1, a1, u2, a2) = two_exchanges(socket)
        word = mark()
        frames = exchange(socket, f"U2 edited {word}", chat_id=chat_id, parent_id=a1["id"])
        kinds = [f["type"] for f in frames]
        assert kinds[:3] == ["message", "chat_updated", "started"], kinds
        assert kinds[-1] == "done", frames[-1]
        edited = of_type(frames, "message")["message"]
        reply = of_type(frames, "done")["message"]
        assert edited["parent_id"] == a1["id"]
        assert edited["sibling_ids"] == [u2["id"], edited["id"]]
        assert place(edited) == (1, 2)
        assert of_type(frames, "chat_updated")["chat"]["active_leaf_id"] == reply["id"]
        assert upstream_turns(fake_llm, word) == [
            ("user", u1["content"]),
            ("assistant", a1["content"]),
            ("user", f"U2 edited {word}"),
        ]
        # A new first message: the history is that message alone.
        again = mark()
        frames = exchange(socket, f"U1 edited {again}", chat_id=chat_id, parent_id=None)
        root = of_type(frames, "message")["message"]
        assert "parent_id" not in root
        assert root["sibling_ids"] == [u1["id"], root["id"]]
        assert upstream_turns(fake_llm, again) == [("user", f"U1 edited {again}")]
        # A parent that is a user message, or in another chat, is refused; nothing stored.
        other_chat, other = two_exchanges(socket)
        for parent, code in ((u1["id"], "invalid_message"), (other[1]["id"], "not_found")):
            refused = exchange(socket, "nope", chat_id=chat_id, parent_id=parent)[-1]
            assert (refused["type"], refused["code"]) == ("error", code), refused
        assert exchange(socket, "nope", parent_id=a1["id"])[-1]["code"] == "not_found"
    tree = whole_tree(alice, chat_id)
    assert len(tree) == 8
    by_id = {m["id"]: m for m in tree}
    assert by_id[a2["id"]]["content"] == a2["content"]  # the old branch stays
    assert by_id[a2["id"]]["parent_id"] == u2["id"]
    assert other_chat != chat_id


def test_edit_and_resend_over_rest(alice: User, fake_llm: FakeOpenAI) -> None:
    with Socket(alice) as socket:
        chat_id, (u1, a1, _u2, _a2) = two_exchanges(socket)
    word = mark()
    with alice.client() as client:
        response = client.post(
            f"/api/chats/{chat_id}/messages",
            json={"content": f"edited {word}", "parent_id": a1["id"]},
        )
        assert response.status_code == 200, response.text
        bad = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": "x", "parent_id": "nope"}
        )
        assert bad.status_code == 400, bad.text
    assert upstream_turns(fake_llm, word) == [
        ("user", u1["content"]),
        ("assistant", a1["content"]),
        ("user", f"edited {word}"),
    ]
    assert [m["content"] for m in branch(alice, chat_id)][:3] == [
        u1["content"],
        a1["content"],
        f"edited {word}",
    ]


def test_switching_branches_changes_what_the_next_message_continues(
    alice: User, bob: User, fake_llm: FakeOpenAI
) -> None:
    with Socket(alice) as socket, Socket(alice) as other_tab:
        chat_id, (u1, a1, u2, a2) = two_exchanges(socket)
        edit = exchange(socket, f"U2b {mark()}", chat_id=chat_id, parent_id=a1["id"])
        u2b, a2b = of_type(edit, "message")["message"], of_type(edit, "done")["message"]
        assert [m["id"] for m in branch(alice, chat_id)] == [
            u1["id"],
            a1["id"],
            u2b["id"],
            a2b["id"],
        ]
        # The other tab, open all along, heard of the chat and its new branch (section 4.2).
        other_tab.send(action="subscribe", chat_id=chat_id)
        other_tab.send(action="ping")
        heard = other_tab.until(lambda f: f["type"] == "pong")
        assert [f["type"] for f in heard] == ["chat_created", "chat_updated", "pong"], heard

        with alice.client() as client:
            response = client.put(f"/api/chats/{chat_id}/active", json={"message_id": u2["id"]})
        assert response.status_code == 200, response.text
        chat = response.json()
        assert chat["active_leaf_id"] == a2["id"]  # the newest leaf under the message
        assert chat["message_count"] == 6
        told = other_tab.until(lambda f: f["type"] == "chat_updated")[-1]
        assert told["chat"] == chat
        assert [m["id"] for m in branch(alice, chat_id)] == [u1["id"], a1["id"], u2["id"], a2["id"]]

        assert socket.until(lambda f: f["type"] == "chat_updated")[-1] == told  # it follows too
        word = mark()
        frames = exchange(socket, f"U3 {word}", chat_id=chat_id)
        assert "chat_updated" not in [f["type"] for f in frames]  # a plain send: as before
        assert of_type(frames, "message")["message"]["parent_id"] == a2["id"]
        assert upstream_turns(fake_llm, word) == [
            ("user", u1["content"]),
            ("assistant", a1["content"]),
            ("user", u2["content"]),
            ("assistant", a2["content"]),
            ("user", f"U3 {word}"),
        ]
        # The other tab follows the chat: it sees the new branch grow.
        seen = other_tab.until(lambda f: f["type"] == "done")
        assert of_type(seen, "message")["message"]["content"] == f"U3 {word}"

        # Back to the edited branch, by its first message.
        with alice.client() as client:
            back = client.put(f"/api/chats/{chat_id}/active", json={"message_id": u2b["id"]})
            assert back.json()["active_leaf_id"] == a2b["id"]
            for body, status in (
                ({"message_id": str(uuid.uuid4())}, 404),
                ({"message_id": "nope"}, 400),
                ({}, 400),
            ):
                refused = client.put(f"/api/chats/{chat_id}/active", json=body)
                assert refused.status_code == status, (body, refused.text)
        with bob.client() as client:
            theirs = client.put(f"/api/chats/{chat_id}/active", json={"message_id": u2["id"]})
            assert theirs.status_code == 404
        assert [m["id"] for m in branch(alice, chat_id)][-1] == a2b["id"]


def test_a_second_tab_sees_chat_updated_and_the_new_branch(alice: User) -> None:
    with Socket(alice) as socket, Socket(alice) as other_tab:
        chat_id, messages = two_exchanges(socket)
        other_tab.send(action="subscribe", chat_id=chat_id)
        other_tab.send(action="ping")
        heard = other_tab.until(lambda f: f["type"] == "pong")
        assert [f["type"] for f in heard] == ["chat_created", "pong"], heard  # no snapshot
        mine = regenerate(socket, chat_id, messages[3]["id"])
        seen = other_tab.until(lambda f: f["type"] in ENDS)
    assert [f["type"] for f in seen][:2] == ["chat_updated", "started"]
    assert seen[0]["chat"]["active_leaf_id"] == mine[-1]["message"]["id"]
    assert seen[-1] == mine[-1]
    assert tokens_of(seen, mine[1]["task_id"]) == tokens_of(mine, mine[1]["task_id"])


def test_a_tab_that_subscribes_during_a_regenerate_gets_its_snapshot(alice: User) -> None:
    word = mark()
    # The first try of this message fails at once; the second, the regenerate, streams slowly.
    script = directive(status=500, fail_times=1, tokens=40, rate=40)
    with Socket(alice) as socket, Socket(alice) as late:
        failed = exchange(socket, f"{word} {script}")
        assert failed[-1]["type"] == "error", failed[-1]
        chat_id = of_type(failed, "chat_created")["chat"]["id"]
        reply_id = of_type(failed, "started")["message_id"]
        socket.send(action="regenerate", chat_id=chat_id, message_id=reply_id)
        started = socket.until(lambda f: f["type"] == "started")[-1]
        socket.until(lambda f: f["type"] == "token" and f["seq"] >= 3)
        late.send(action="ping")  # it heard of the chat and its new branch, not the replies
        heard = late.until(lambda f: f["type"] == "pong")
        assert [f["type"] for f in heard] == ["chat_created", "chat_updated", "pong"], heard
        late.send(action="subscribe", chat_id=chat_id)
        snapshot = late.recv()
        assert snapshot["type"] == "snapshot", snapshot
        assert snapshot["message_id"] == started["message_id"] != reply_id
        rest = late.until_end(started["task_id"])
        mine = socket.until_end(started["task_id"])
    tokens = tokens_of(rest, started["task_id"])
    assert [t["seq"] for t in tokens] == list(
        range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(tokens))
    )
    assert (
        snapshot["content"] + "".join(t["token"] for t in tokens)
        == Script(tokens=40).expected_text()
    )
    assert rest[-1] == mine[-1]
    assert rest[-1]["type"] == "done"


def test_regenerate_counts_against_the_per_user_cap(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    server = serve_app(**upstream_settings(fake_llm), MAX_CONCURRENT_GENERATIONS="1")
    user = register_and_login(server)
    with Socket(user) as socket:
        chat_id, messages = two_exchanges(socket)
        started = socket.start(f"{mark()} {directive(tokens=400, rate=40)}")
        socket.send(action="regenerate", chat_id=chat_id, message_id=messages[3]["id"])
        refused = socket.until(lambda f: f["type"] == "error" and f.get("task_id") is None)[-1]
        assert refused["code"] == "rate_limited", refused
        assert refused["retry_after"] == 1
        socket.send(action="abort", task_id=started["task_id"])
        assert socket.until_end(started["task_id"])[-1]["type"] == "aborted"
        again = regenerate(socket, chat_id, messages[3]["id"])
        assert again[-1]["type"] == "done", again[-1]


def test_pages_of_a_long_branch_follow_the_branch(alice: User) -> None:
    with Socket(alice) as socket:
        chat_id, messages = two_exchanges(socket)
        third = exchange(socket, f"U3 {mark()}", chat_id=chat_id)
        regenerate(socket, chat_id, messages[1]["id"])  # a branch off the first reply
        regenerate(socket, chat_id, of_type(third, "done")["message"]["id"])
    with alice.client() as client:
        client.put(f"/api/chats/{chat_id}/active", json={"message_id": messages[2]["id"]})
        pages: list[list[str]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["before"] = cursor
            page = client.get(f"/api/chats/{chat_id}/messages", params=params).json()
            pages.append([m["id"] for m in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        everything = client.get(
            f"/api/chats/{chat_id}/messages", params={"all": "true", "limit": 200}
        ).json()
    walked = [message_id for page in reversed(pages) for message_id in page]
    assert walked == [m["id"] for m in branch(alice, chat_id)]
    assert len(walked) == 6  # U1 A1 U2 A2 U3, and the newest reply of U3
    assert len(everything["items"]) == 8  # and the two earlier replies regenerated
    assert everything["next_cursor"] is None


# --- start in one call ---------------------------------------------------------------------


def test_a_chat_starts_with_its_first_message_in_one_call(alice: User) -> None:
    word = mark()
    with alice.client() as client:
        response = client.post(
            "/api/chats", json={"content": f"First line {word}\nmore", "system_prompt": "Be brief"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        chat, reply = answer["chat"], answer["message"]
        assert answer["chat_id"] == chat["id"]
        assert answer["message_id"] == reply["id"]
        assert chat["title"] == f"First line {word}"
        assert chat["system_prompt"] == "Be brief"
        assert chat["message_count"] == 2
        assert chat["active_leaf_id"] == reply["id"]
        assert reply["status"] == "complete"
        assert reply["content"] == Script().expected_text()

        titled = client.post("/api/chats", json={"content": "hi", "title": "Mine"}).json()
        assert titled["chat"]["title"] == "Mine"

        with client.stream(
            "POST",
            "/api/chats",
            json={"content": f"streamed {word}"},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200
            events = _sse(stream)
        kinds = [kind for kind, _ in events]
        assert kinds[:3] == ["chat_created", "message", "started"], kinds
        assert kinds[-1] == "done"
        streamed = events[0][1]["chat"]["id"]

        plain = client.post("/api/chats", json={"title": "empty"})
        assert plain.status_code == 201
        assert plain.json()["message_count"] == 0
        assert "messages" not in plain.json()
        listed = {c["id"]: c for c in client.get("/api/chats").json()["items"]}
        assert listed[chat["id"]]["message_count"] == 2
        assert listed[streamed]["message_count"] == 2
        assert listed[plain.json()["id"]]["message_count"] == 0
        refused = client.post("/api/chats", json={"content": "x", "model": "not-offered"})
        assert refused.status_code == 422, refused.text
        blank = client.post("/api/chats", json={"content": "   "})
        assert blank.status_code == 400, blank.text


# --- across instances ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def twins_cluster(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[tuple[Server, Server]]:
    """Two instances on one database and a PostgreSQL event bus."""
    db = make_database(engine, migrated=True)
    cwd: Path = tmp_path_factory.mktemp(f"trees-{engine}")
    settings = {**upstream_settings(fake_llm), "EVENT_BUS_URL": PG_ADMIN_URL}
    a = start_server(db, cwd, **settings)
    b = start_server(db, cwd, **settings)
    yield a, b
    a.stop()
    b.stop()


def test_regenerate_and_abort_across_instances(
    twins_cluster: tuple[Server, Server], fake_llm: FakeOpenAI
) -> None:
    a, b = twins_cluster
    on_a = register_and_login(a)
    on_b = replace(on_a, server=b)
    with Socket(on_a) as writer, Socket(on_b) as reader:
        chat_id, messages = two_exchanges(writer)
        reader.send(action="subscribe", chat_id=chat_id)
        reader.send(action="ping")
        # (the chat's `chat_created` may come through the bus before or after it)
        reader.until(lambda f: f["type"] == "pong")
        # A slow regenerate runs on A: B refuses a second one (busy), then aborts it.
        word = mark()
        # (The first try of this message fails at once; the second, the regenerate, is slow.)
        script = directive(status=500, fail_times=1, tokens=400, rate=40)
        failed = exchange(writer, f"{word} {script}", chat_id=chat_id, parent_id=messages[1]["id"])
        assert failed[-1]["type"] == "error", failed[-1]
        slow = branch(on_a, chat_id)[-1]
        assert slow["status"] == "failed"
        writer.send(action="regenerate", chat_id=chat_id, message_id=slow["id"])
        started = writer.until(lambda f: f["type"] == "started")[-1]
        writer.until(lambda f: f["type"] == "token" and f["task_id"] == started["task_id"])
        with on_b.client() as client:
            busy = client.post(f"/api/chats/{chat_id}/messages/{messages[3]['id']}/regenerate")
            assert busy.status_code == 409, busy.text
            aborted = client.post(f"/api/chats/{chat_id}/abort")
        assert aborted.status_code == 200, aborted.text
        assert aborted.json()["task_id"] == started["task_id"]
        ended = writer.until_end(started["task_id"])[-1]
        seen = reader.until_end(started["task_id"])
        assert ended["type"] == "aborted"
        assert seen[-1] == ended
        assert any(
            f["type"] == "chat_updated" and f["chat"]["active_leaf_id"] == started["message_id"]
            for f in seen
        )
        # A regenerate sent to B runs there; the socket on A sees it as it streams.
        frames = regenerate(reader, chat_id, messages[3]["id"])
        assert frames[-1]["type"] == "done", frames[-1]
        mine = writer.until_end(frames[1]["task_id"])
        assert mine[-1] == frames[-1]
        assert (
            of_type(mine, "chat_updated")["chat"]["active_leaf_id"] == frames[-1]["message"]["id"]
        )
    record = fake_llm.records_for(word)[-1]
    fake_llm.wait_for(lambda: record.disconnected, what="the aborted stream to be closed")
    assert record.tokens_sent < 400
