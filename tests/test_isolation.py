"""User B can neither see nor change anything of user A's, on any chat route."""

from __future__ import annotations

from tests.conftest import User, insert_message


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
