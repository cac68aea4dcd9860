"""The chat REST API (docs/protocol.md section 3) over real HTTP, on each engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support import OTHER_MODEL, User, insert_message

SQL_NASTIES = [
    "100% done",
    "snake_case_title",
    'it\'s "quoted"',
    "'; DROP TABLE chat; --",
    "Robert'); DELETE FROM message WHERE ('1'='1",
    "back\\slash",
    "UNION SELECT password FROM piccolo_user",
]


def test_create_get_update_delete(alice: User) -> None:
    with alice.client() as client:
        created = client.post(
            "/api/chats",
            json={"title": "Plans", "system_prompt": "Be brief.", "model": OTHER_MODEL},
        )
        assert created.status_code == 201
        chat = created.json()
        assert chat["title"] == "Plans"
        assert chat["system_prompt"] == "Be brief."
        assert chat["model"] == OTHER_MODEL
        assert chat["created_at"].endswith("Z")
        assert chat["created_at"] == chat["updated_at"]

        fetched = client.get(f"/api/chats/{chat['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == {**chat, "messages": [], "messages_next_cursor": None}

        renamed = client.patch(f"/api/chats/{chat['id']}", json={"title": "Renamed"})
        assert renamed.status_code == 200
        body = renamed.json()
        assert body["title"] == "Renamed"
        assert body["system_prompt"] == "Be brief."  # untouched fields stay
        assert body["model"] == OTHER_MODEL
        assert body["updated_at"] > chat["updated_at"]

        reset = client.patch(f"/api/chats/{chat['id']}", json={"model": None})
        assert reset.json()["model"] is None
        assert reset.json()["title"] == "Renamed"

        deleted = client.delete(f"/api/chats/{chat['id']}")
        assert deleted.status_code == 204
        assert client.get(f"/api/chats/{chat['id']}").status_code == 404
        assert client.delete(f"/api/chats/{chat['id']}").status_code == 404


def test_create_with_defaults(alice: User) -> None:
    with alice.client() as client:
        chat = client.post("/api/chats", json={}).json()
    assert chat["title"] == "New chat"
    assert chat["system_prompt"] == ""
    assert chat["model"] is None


def test_delete_removes_the_messages(alice: User) -> None:
    db = alice.server.db
    with alice.client() as client:
        chat = client.post("/api/chats", json={"title": "doomed"}).json()
        insert_message(db, chat["id"], "hello")
        insert_message(db, chat["id"], "hi there", role="assistant")
        assert len(client.get(f"/api/chats/{chat['id']}").json()["messages"]) == 2
        assert client.delete(f"/api/chats/{chat['id']}").status_code == 204
    rows = db.query("SELECT count(*) AS n FROM message WHERE chat = ?", chat["id"])
    assert rows[0]["n"] == 0


def test_chat_with_messages_shape(alice: User) -> None:
    db = alice.server.db
    start = datetime.now(UTC)
    with alice.client() as client:
        chat = client.post("/api/chats", json={"title": "shape"}).json()
        first = insert_message(db, chat["id"], "question", created_at=start)
        second = insert_message(
            db, chat["id"], "answer", role="assistant", created_at=start + timedelta(seconds=1)
        )
        messages = client.get(f"/api/chats/{chat['id']}").json()["messages"]
    assert [m["id"] for m in messages] == [first, second]
    user_message, reply = messages
    assert user_message["role"] == "user"
    assert user_message["is_ai"] is False
    assert reply["is_ai"] is True
    assert reply["chat_id"] == chat["id"]
    assert reply["status"] == "complete"
    assert reply["usage"] is None
    assert set(reply) == {
        "id",
        "chat_id",
        "role",
        "content",
        "status",
        "is_ai",
        "model",
        "usage",
        "finish_reason",
        "created_at",
        "completed_at",
        "parent_id",  # issue 15: the message it follows (left out for a first message)
    }
    assert reply["parent_id"] == first
    assert "parent_id" not in user_message


def test_pagination_returns_every_chat_exactly_once(fresh_user: User) -> None:
    with fresh_user.client() as client:
        made = [client.post("/api/chats", json={"title": f"chat {i}"}).json() for i in range(23)]
        seen: list[dict] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/chats", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["items"]) <= 5
            seen.extend(body["items"])
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert pages == 5
    assert sorted(c["id"] for c in seen) == sorted(c["id"] for c in made)
    assert len({c["id"] for c in seen}) == len(seen) == 23
    stamps = [(c["updated_at"], c["id"]) for c in seen]
    assert stamps == sorted(stamps, reverse=True)


def test_pagination_with_equal_timestamps(fresh_user: User) -> None:
    """Chats updated at the same instant are still paged exactly once (ties break on id)."""
    db = fresh_user.server.db
    with fresh_user.client() as client:
        made = [client.post("/api/chats", json={"title": f"tie {i}"}).json() for i in range(7)]
        same = datetime(2026, 1, 1, tzinfo=UTC)
        db.query("UPDATE chat SET updated_at = ? WHERE owner = ?", same, fresh_user.id)
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            body = client.get("/api/chats", params=params).json()
            seen += [c["id"] for c in body["items"]]
            if not (cursor := body["next_cursor"]):
                break
    assert sorted(seen) == sorted(c["id"] for c in made)
    assert len(seen) == len(set(seen))


def test_updated_chat_moves_to_the_top(fresh_user: User) -> None:
    with fresh_user.client() as client:
        first = client.post("/api/chats", json={"title": "first"}).json()
        client.post("/api/chats", json={"title": "second"})
        client.patch(f"/api/chats/{first['id']}", json={"title": "first, edited"})
        items = client.get("/api/chats").json()["items"]
    assert [c["title"] for c in items] == ["first, edited", "second"]


def test_user_chats_route_lists_the_same(fresh_user: User) -> None:
    with fresh_user.client() as client:
        client.post("/api/chats", json={"title": "one"})
        client.post("/api/chats", json={"title": "two"})
        mine = client.get("/api/chats").json()
        by_id = client.get(f"/api/users/{fresh_user.id}/chats").json()
    assert by_id == mine
    assert len(mine["items"]) == 2


def test_search_by_title_and_by_message_text(fresh_user: User) -> None:
    db = fresh_user.server.db
    with fresh_user.client() as client:
        by_title = client.post("/api/chats", json={"title": "Trip to Lisbon"}).json()
        by_text = client.post("/api/chats", json={"title": "Untitled"}).json()
        insert_message(db, by_text["id"], "What should I pack for LISBON in May?")
        client.post("/api/chats", json={"title": "Groceries"})
        found = client.get("/api/chats", params={"q": "lisbon"}).json()["items"]
        none = client.get("/api/chats", params={"q": "Madrid"}).json()["items"]
    assert {c["id"] for c in found} == {by_title["id"], by_text["id"]}
    assert none == []


def test_search_is_literal_and_not_an_injection_vector(fresh_user: User) -> None:
    db = fresh_user.server.db
    with fresh_user.client() as client:
        chats = {t: client.post("/api/chats", json={"title": t}).json() for t in SQL_NASTIES}
        plain = client.post("/api/chats", json={"title": "plain"}).json()
        insert_message(db, plain["id"], "50% off; it's a deal")

        def search(q: str) -> set[str]:
            response = client.get("/api/chats", params={"q": q})
            assert response.status_code == 200, response.text
            return {c["id"] for c in response.json()["items"]}

        assert search("%") == {chats["100% done"]["id"], plain["id"]}
        assert search("_") == {
            chats["snake_case_title"]["id"],
            chats["UNION SELECT password FROM piccolo_user"]["id"],
        }
        assert search("'") == {
            chats['it\'s "quoted"']["id"],
            chats["'; DROP TABLE chat; --"]["id"],
            chats["Robert'); DELETE FROM message WHERE ('1'='1"]["id"],
            plain["id"],
        }
        assert search("\\") == {chats["back\\slash"]["id"]}
        assert search("' OR '1'='1") == set()
        assert search("DROP TABLE chat") == {chats["'; DROP TABLE chat; --"]["id"]}
        assert search("union select") == {chats["UNION SELECT password FROM piccolo_user"]["id"]}
        # Nothing was dropped or deleted along the way.
        assert len(client.get("/api/chats", params={"limit": 200}).json()["items"]) == 8
    assert db.query("SELECT count(*) AS n FROM message WHERE chat = ?", plain["id"])[0]["n"] == 1


def test_message_pagination_walks_back_in_time(alice: User) -> None:
    db = alice.server.db
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with alice.client() as client:
        chat = client.post("/api/chats", json={"title": "long"}).json()
        ids = [
            insert_message(db, chat["id"], f"m{i}", created_at=start + timedelta(seconds=i))
            for i in range(12)
        ]
        first = client.get(f"/api/chats/{chat['id']}/messages", params={"limit": 5}).json()
        assert [m["content"] for m in first["items"]] == ["m7", "m8", "m9", "m10", "m11"]
        collected = list(first["items"])
        cursor = first["next_cursor"]
        while cursor:
            page = client.get(
                f"/api/chats/{chat['id']}/messages", params={"limit": 5, "before": cursor}
            ).json()
            collected = page["items"] + collected
            cursor = page["next_cursor"]
    assert [m["id"] for m in collected] == ids


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/api/chats", {"json": {"title": "t" * 201}}, "title"),
        ("POST", "/api/chats", {"json": {"system_prompt": "s" * 32_001}}, "system_prompt"),
        ("POST", "/api/chats", {"json": {"model": "bad model!"}}, "model"),
        ("POST", "/api/chats", {"json": {"model": ""}}, "model"),
        ("POST", "/api/chats", {"json": {"title": 5}}, "title"),
        ("POST", "/api/chats", {"json": {"colour": "red"}}, "colour"),
        ("PATCH", "/api/chats/{id}", {"json": {"title": None}}, "title"),
        ("PATCH", "/api/chats/{id}", {"json": {"title": "t" * 201}}, "title"),
        ("GET", "/api/chats", {"params": {"limit": 0}}, "limit"),
        ("GET", "/api/chats", {"params": {"limit": 201}}, "limit"),
        ("GET", "/api/chats", {"params": {"limit": "many"}}, "limit"),
        ("GET", "/api/chats", {"params": {"q": "q" * 201}}, "q"),
        ("GET", "/api/chats", {"params": {"cursor": "not-a-cursor"}}, "cursor"),
        ("GET", "/api/chats/{id}/messages", {"params": {"before": "zzz"}}, "before"),
        ("GET", "/api/chats/{id}/messages", {"params": {"limit": -1}}, "limit"),
        ("GET", "/api/chats/not-a-uuid", {}, "chat_id"),
        ("PATCH", "/api/chats/123", {"json": {}}, "chat_id"),
        ("DELETE", "/api/chats/xyz", {}, "chat_id"),
        ("GET", "/api/users/abc/chats", {}, "user_id"),
    ],
)
def test_validation_errors_name_the_field(
    alice: User, method: str, path: str, kwargs: dict, field: str
) -> None:
    with alice.client() as client:
        chat = client.post("/api/chats", json={"title": "target"}).json()
        response = client.request(method, path.format(id=chat["id"]), **kwargs)
        assert response.status_code in (400, 422), response.text
        body = response.json()
        assert field in body["detail"], body
        assert body["code"] == "invalid_message"
        assert client.get(f"/api/chats/{chat['id']}").json()["title"] == "target"


def test_malformed_json_body_is_400(alice: User) -> None:
    with alice.client() as client:
        response = client.post(
            "/api/chats", content=b"{broken", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "Traceback" not in response.text
