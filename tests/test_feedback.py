"""Feedback on replies (issue 17, point 4): ``PUT`` and ``DELETE
/api/chats/{chat_id}/messages/{message_id}/feedback``, shown with the messages, only on
the owner's assistant messages, filterable by rating in the admin. Both engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, User, register_and_login
from tests.test_admin import admin_client, admin_login, create_user


def exchange(user: User, content: str = "rate my answer") -> tuple[str, str, str]:
    """A chat with one question and its reply: (chat id, user message id, reply id)."""
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": "feedback"})
        assert chat.status_code == 201, chat.text
        chat_id = chat.json()["id"]
        sent = client.post(f"/api/chats/{chat_id}/messages", json={"content": content})
    assert sent.status_code == 200, sent.text
    reply = sent.json()["message"]
    assert reply["role"] == "assistant"
    return chat_id, reply["parent_id"], reply["id"]


def path(chat_id: str, message_id: str) -> str:
    return f"/api/chats/{chat_id}/messages/{message_id}/feedback"


def rate(user: User, chat_id: str, message_id: str, **body: Any) -> httpx.Response:
    with user.client() as client:
        return client.put(path(chat_id, message_id), json=body)


def shown(user: User, chat_id: str) -> dict[str, dict[str, Any]]:
    """Each message as the chat, its branch page and its whole-tree page show it."""
    with user.client() as client:
        chat = client.get(f"/api/chats/{chat_id}").json()["messages"]
        branch = client.get(f"/api/chats/{chat_id}/messages").json()["items"]
        tree = client.get(f"/api/chats/{chat_id}/messages", params={"all": "true"}).json()["items"]
    assert chat == branch
    assert {m["id"]: m for m in tree} == {m["id"]: m for m in branch}
    return {m["id"]: m for m in branch}


def stored(server: Server, message_id: str) -> list[dict[str, Any]]:
    return server.db.query(
        "SELECT rating, comment FROM message_feedback WHERE message = ?", message_id
    )


def test_a_reply_is_rated_shown_changed_and_unrated(fresh_user: User) -> None:
    chat_id, question, reply = exchange(fresh_user)
    assert "feedback" not in shown(fresh_user, chat_id)[reply]

    up = rate(fresh_user, chat_id, reply, rating="up", comment="spot on")
    assert up.status_code == 200, up.text
    assert up.json()["rating"] == "up"
    assert up.json()["comment"] == "spot on"
    messages = shown(fresh_user, chat_id)
    assert messages[reply]["feedback"] == up.json()
    assert "feedback" not in messages[question]

    down = rate(fresh_user, chat_id, reply, rating="down")
    assert down.status_code == 200, down.text
    assert (down.json()["rating"], down.json()["comment"]) == ("down", "")
    assert down.json()["created_at"] == up.json()["created_at"]
    assert down.json()["updated_at"] >= up.json()["updated_at"]
    assert shown(fresh_user, chat_id)[reply]["feedback"] == down.json()
    assert stored(fresh_user.server, reply) == [{"rating": "down", "comment": ""}]

    with fresh_user.client() as client:
        assert client.delete(path(chat_id, reply)).status_code == 204
        assert client.delete(path(chat_id, reply)).status_code == 204  # none left: the same
    assert "feedback" not in shown(fresh_user, chat_id)[reply]
    assert stored(fresh_user.server, reply) == []


def test_only_assistant_messages_of_your_own_chats_are_rated(fresh_user: User) -> None:
    chat_id, question, reply = exchange(fresh_user)
    other = register_and_login(fresh_user.server)

    refused = rate(fresh_user, chat_id, question, rating="up")
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "not_a_reply"
    with fresh_user.client() as client:
        assert client.delete(path(chat_id, question)).json()["code"] == "not_a_reply"

    for who, chat, message in (
        (other, chat_id, reply),  # another user's chat: as if it did not exist
        (fresh_user, chat_id, "00000000-0000-4000-8000-000000000000"),
        (fresh_user, "00000000-0000-4000-8000-000000000000", reply),
    ):
        missing = rate(who, chat, message, rating="up")
        assert missing.status_code == 404, missing.text
        assert missing.json()["code"] == "not_found"
    other_chat, _, other_reply = exchange(other)
    # a message of another chat, even your own, is not in this one
    assert rate(other, chat_id, other_reply, rating="up").status_code == 404
    assert rate(fresh_user, other_chat, other_reply, rating="up").status_code == 404
    with other.client() as client:
        assert client.delete(path(chat_id, reply)).status_code == 404
    assert stored(fresh_user.server, reply) == []
    assert stored(fresh_user.server, other_reply) == []


@pytest.mark.parametrize(
    "body",
    [
        {"rating": "meh"},
        {},
        {"rating": "up", "comment": "x" * 2001},
        {"rating": "up", "comment": "nul\x00"},
        {"rating": "up", "comment": 5},
        {"rating": "up", "extra": 1},
        {"rating": None},
    ],
)
def test_bad_feedback_is_a_400_and_stores_nothing(fresh_user: User, body: dict[str, Any]) -> None:
    chat_id, _, reply = exchange(fresh_user)
    refused = rate(fresh_user, chat_id, reply, **body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "invalid_message"
    assert stored(fresh_user.server, reply) == []


def test_a_long_comment_up_to_the_limit_is_kept(fresh_user: User) -> None:
    chat_id, _, reply = exchange(fresh_user)
    comment = "é" * 2000
    assert rate(fresh_user, chat_id, reply, rating="down", comment=comment).status_code == 200
    assert stored(fresh_user.server, reply) == [{"rating": "down", "comment": comment}]


def test_deleting_the_chat_deletes_its_feedback(fresh_user: User) -> None:
    chat_id, _, reply = exchange(fresh_user)
    assert rate(fresh_user, chat_id, reply, rating="up").status_code == 200
    with fresh_user.client() as client:
        assert client.delete(f"/api/chats/{chat_id}").status_code == 204
    assert stored(fresh_user.server, reply) == []


def test_staff_filter_feedback_by_rating_in_the_admin(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    liked_chat, _, liked = exchange(user, "one")
    disliked_chat, _, disliked = exchange(user, "two")
    assert rate(user, liked_chat, liked, rating="up", comment="good").status_code == 200
    assert rate(user, disliked_chat, disliked, rating="down", comment="bad").status_code == 200
    with admin_client(server) as staff:
        login = admin_login(staff, create_user(server, tmp_path, "--staff"))
        assert login.status_code == 200, login.text
        filter_by_rating(staff, liked, disliked)


def filter_by_rating(staff: httpx.Client, liked: str, disliked: str) -> None:
    table = "/admin/api/tables/message_feedback/"
    for rating, expected in (("up", liked), ("down", disliked)):
        rows = staff.get(table, params={"rating": rating, "message": expected})
        assert rows.status_code == 200, rows.text
        assert [(r["message"], r["rating"]) for r in rows.json()["rows"]] == [(expected, rating)]
    assert staff.get(table, params={"rating": "up", "message": disliked}).json()["rows"] == []
    first = staff.get(table, params={"message": liked}).json()["rows"][0]
    assert staff.patch(f"{table}{first['id']}/", json={"rating": "down"}).status_code == 405
    assert staff.delete(f"{table}{first['id']}/").status_code == 405
