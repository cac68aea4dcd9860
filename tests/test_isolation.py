"""User B can neither see nor change anything of user A's, on any chat route."""

from __future__ import annotations

from tests.support import User, insert_message


def _snapshot(owner: User, chat_id: str) -> tuple[dict, list[dict]]:
    with owner.client() as client:
        chat = client.get(f"/api/chats/{chat_id}").json()
    rows = owner.server.db.query(
        "SELECT id, content, status FROM message WHERE chat = ? ORDER BY id", chat_id
    )
    return chat, [{k: str(v) for k, v in row.items()} for row in rows]


def test_another_users_chat_is_always_404_and_unchanged(alice: User, bob: User) -> None:
    with alice.client() as client:
        chat = client.post(
            "/api/chats", json={"title": "alice's secret", "system_prompt": "private"}
        ).json()
    insert_message(alice.server.db, chat["id"], "my diary entry")
    before = _snapshot(alice, chat["id"])
    chat_id = chat["id"]

    attempts = [
        ("GET", f"/api/chats/{chat_id}", None, None),
        ("GET", f"/api/chats/{chat_id}/messages", None, None),
        ("GET", f"/api/chats/{chat_id}/messages", None, {"limit": 1}),
        ("PATCH", f"/api/chats/{chat_id}", {"title": "pwned"}, None),
        ("PATCH", f"/api/chats/{chat_id}", {"system_prompt": "leak everything"}, None),
        ("PATCH", f"/api/chats/{chat_id}", {}, None),
        ("DELETE", f"/api/chats/{chat_id}", None, None),
        ("GET", f"/api/users/{alice.id}/chats", None, None),
        ("GET", f"/api/users/{alice.id}/chats", None, {"q": "secret"}),
    ]
    with bob.client() as client:
        for method, path, body, params in attempts:
            response = client.request(method, path, json=body, params=params)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["code"] == "not_found"
            assert "alice" not in response.text
            assert "secret" not in response.text
        # Nor does it show up in B's own list or search.
        mine = client.get("/api/chats", params={"q": "secret", "limit": 200}).json()["items"]
        assert chat_id not in {c["id"] for c in mine}
        everything = client.get("/api/chats", params={"limit": 200}).json()["items"]
        assert chat_id not in {c["id"] for c in everything}

    assert _snapshot(alice, chat_id) == before


def test_unknown_and_foreign_chats_answer_the_same(alice: User, bob: User) -> None:
    with alice.client() as client:
        chat_id = client.post("/api/chats", json={"title": "a"}).json()["id"]
    with bob.client() as client:
        foreign = client.get(f"/api/chats/{chat_id}")
        unknown = client.get("/api/chats/00000000-0000-4000-8000-000000000000")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.content == unknown.content


def test_websocket_actions_on_another_users_chat_change_nothing(alice: User, bob: User) -> None:
    from tests.fake_openai import directive
    from tests.support import Socket, tokens_of

    with Socket(alice) as owner, Socket(bob) as intruder:
        started = owner.start(f"private {directive(tokens=60, rate=60)}")
        chat_id, task_id = started["chat_id"], started["task_id"]

        intruder.send(action="send_message", content="let me in", chat_id=chat_id, request_id="x1")
        sent = intruder.recv()
        intruder.send(action="subscribe", chat_id=chat_id)
        subscribed = intruder.recv()
        intruder.send(action="abort", task_id=task_id)
        by_task = intruder.recv()
        intruder.send(action="abort", chat_id=chat_id)
        by_chat = intruder.recv()
        frames = owner.until_end(task_id)
        intruder.send(action="ping")
        after = intruder.recv()  # nothing of alice's stream leaked into bob's socket

    assert (sent["code"], sent["request_id"]) == ("not_found", "x1")
    assert subscribed["code"] == "not_found"
    # An abort answers `not_running` for unknown, finished or foreign tasks alike (PROTOCOL 2.3);
    # by chat, another user's chat is `not_found`, as for `subscribe` (issue 12).
    assert by_task["code"] == "not_running"
    assert by_chat["code"] == "not_found"
    assert after == {"type": "pong"}
    assert frames[-1]["type"] == "done"
    assert frames[-1]["message"]["content"] == "".join(
        t["token"] for t in tokens_of(frames, task_id)
    )
    with alice.client() as client:
        history = client.get(f"/api/chats/{chat_id}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "let me in" not in str(history)
