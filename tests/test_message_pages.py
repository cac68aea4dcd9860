"""``GET /api/chats/{id}/messages`` paged with ``before`` (docs/protocol.md): every message
of the chat (``all=true``) page by page, each once, back to the first; and a cursor is
only good for the chat it came from."""

from __future__ import annotations

from typing import Any

from tests.fake_openai import directive
from tests.support import User


def chat_with_exchanges(user: User, count: int) -> str:
    """A chat with ``count`` finished exchanges (2 * count messages), made over REST."""
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": "pages"}).json()
        for n in range(count):
            sent = client.post(
                f"/api/chats/{chat['id']}/messages",
                json={"content": f"question {n} {directive(tokens=2)}"},
            )
            assert sent.status_code == 200, sent.text
    return chat["id"]


def page(user: User, chat_id: str, **params: Any) -> dict[str, Any]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}/messages", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_message_page_by_page_back_to_the_first(alice: User) -> None:
    chat_id = chat_with_exchanges(alice, 3)
    whole = page(alice, chat_id, all="true", limit=100)
    assert whole["next_cursor"] is None
    assert len(whole["items"]) == 6

    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"all": "true", "limit": 4}
        if cursor is not None:
            params["before"] = cursor
        answer = page(alice, chat_id, **params)
        pages.append(answer["items"])
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 2]  # the newest first, the first messages last
    read = [m for p in reversed(pages) for m in p]  # each page is oldest first
    assert [m["id"] for m in read] == [m["id"] for m in whole["items"]]
    assert read[0]["content"].startswith("question 0")
    assert read[-2]["content"].startswith("question 2")


def test_a_cursor_of_another_chat_is_refused(alice: User) -> None:
    mine = chat_with_exchanges(alice, 2)
    other = chat_with_exchanges(alice, 2)
    cursor = page(alice, other, limit=1)["next_cursor"]
    assert cursor is not None
    with alice.client() as client:
        answer = client.get(f"/api/chats/{mine}/messages", params={"before": cursor})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_message"
    assert "before: not a message of this chat" in answer.json()["detail"]
    # In its own chat, the same cursor pages on.
    older = page(alice, other, limit=1, before=cursor)
    assert len(older["items"]) == 1
