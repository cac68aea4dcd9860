"""Full-text search (issue 17): ``GET /api/search`` finds a user's chat titles and message
texts, ranked, with plain snippets and the matched ranges; never another user's; its
indexes are kept in step by the database (new, edited, deleted rows); hostile queries get
a clear 400, never a 500."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx
import pytest

from tests.support import User, insert_message, register_and_login
from tests.support.servers import Server


def word() -> str:
    """A word no other test stores (letters only: one token on both engines)."""
    return "w" + "".join(secrets.choice("abcdefghijklmnopqrstuvxyz") for _ in range(12))


def search(user: User, q: str, **params: Any) -> httpx.Response:
    with user.client() as client:
        return client.get("/api/search", params={"q": q, **params})


def hits(user: User, q: str, **params: Any) -> list[dict[str, Any]]:
    response = search(user, q, **params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def new_chat(user: User, title: str = "untitled") -> str:
    with user.client() as client:
        response = client.post("/api/chats", json={"title": title})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def message_ids(found: list[dict[str, Any]]) -> list[str | None]:
    return [hit["message_id"] for hit in found]


def marked(hit: dict[str, Any]) -> list[str]:
    return [hit["snippet"][start:end] for start, end in hit["ranges"]]


def test_finds_messages_and_titles_with_snippets_and_ranges(server: Server, alice: User) -> None:
    key = word()
    chat = new_chat(alice, f"Notes about {key} and more")
    long_text = " ".join(["filler"] * 80 + [key.upper(), "tail"] + ["filler"] * 80)
    first = insert_message(server.db, chat, f"a first line with {key} in it")
    second = insert_message(server.db, chat, long_text, role="assistant")

    found = hits(alice, key)

    by_message = {hit["message_id"]: hit for hit in found}
    assert set(by_message) == {None, first, second}
    title = by_message[None]
    assert title["chat_id"] == chat
    assert title["snippet"] == f"Notes about {key} and more"
    assert marked(title) == [key]
    assert by_message[first]["snippet"] == f"a first line with {key} in it"
    assert marked(by_message[first]) == [key]
    assert by_message[first]["role"] == "user"
    assert by_message[first]["chat_title"].startswith("No")
    long_hit = by_message[second]
    assert marked(long_hit) == [key.upper()]  # case-insensitive, the stored case shown
    assert len(long_hit["snippet"]) < len(long_text) / 2  # a snippet, not the message
    assert "<" not in long_hit["snippet"]
    assert "\ue000" not in long_hit["snippet"]


def test_ranked_best_first(server: Server, alice: User) -> None:
    key = word()
    chat = new_chat(alice)
    once = insert_message(server.db, chat, f"{key} alpha beta gamma delta epsilon")
    thrice = insert_message(server.db, chat, f"{key} alpha {key} beta {key} gamma")
    found = hits(alice, key)
    assert message_ids(found) == [thrice, once]
    assert found[0]["score"] > found[1]["score"]


def test_phrase_negation_and_or(server: Server, alice: User) -> None:
    a, b, c = word(), word(), word()
    chat = new_chat(alice)
    ab = insert_message(server.db, chat, f"{a} {b} together")
    ba = insert_message(server.db, chat, f"{b} then {a} apart")
    only_c = insert_message(server.db, chat, f"just {c}")

    assert set(message_ids(hits(alice, f"{a} {b}"))) == {ab, ba}
    assert message_ids(hits(alice, f'"{a} {b}"')) == [ab]
    assert message_ids(hits(alice, f"{a} -{c} -together")) == [ba]
    assert message_ids(hits(alice, f'{a} -"{a} {b}"')) == [ba]
    assert set(message_ids(hits(alice, f'"{a} {b}" or {c}'))) == {ab, only_c}
    assert set(message_ids(hits(alice, f"{c} OR {b}"))) == {ab, ba, only_c}


def test_case_folds_accents_stay(server: Server, alice: User) -> None:
    key = word()
    chat = new_chat(alice)
    accented = insert_message(server.db, chat, f"{key} CAFÉ Straße")
    plain = insert_message(server.db, chat, f"{key} cafe strasse")
    assert message_ids(hits(alice, f"{key} café")) == [accented]
    assert message_ids(hits(alice, f"{key} Cafe")) == [plain]
    assert marked(hits(alice, f"{key} café")[0]) == [key, "CAFÉ"]


def test_never_another_users_text(server: Server, alice: User, bob: User) -> None:
    key = word()
    chat = new_chat(alice, f"title {key}")
    insert_message(server.db, chat, f"secret {key}")
    assert len(hits(alice, key)) == 2
    assert hits(bob, key) == []
    assert hits(bob, f"{key} or secret or title") == []


def test_pages_follow_each_other_without_gaps_or_repeats(server: Server, alice: User) -> None:
    key = word()
    chat = new_chat(alice)
    stored = {insert_message(server.db, chat, f"same {key} text") for _ in range(7)}  # ties
    seen: list[str | None] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = search(alice, key, **params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        seen += message_ids(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7
    assert set(seen) == stored
    assert seen == sorted(seen)  # equal scores: by id


def test_new_edited_and_deleted_rows_follow(server: Server, fresh_user: User) -> None:
    old, new, gone = word(), word(), word()
    chat = new_chat(fresh_user, f"about {gone}")
    message = insert_message(server.db, chat, f"first {old}")
    assert message_ids(hits(fresh_user, old)) == [message]

    server.db.query("UPDATE message SET content = ? WHERE id = ?", f"now {new}", uuid.UUID(message))
    assert hits(fresh_user, old) == []
    assert message_ids(hits(fresh_user, new)) == [message]

    with fresh_user.client() as client:
        renamed = client.patch(f"/api/chats/{chat}", json={"title": f"renamed {old}"})
        assert renamed.status_code == 200, renamed.text
    assert hits(fresh_user, gone) == []
    assert message_ids(hits(fresh_user, old)) == [None]

    with fresh_user.client() as client:
        assert client.delete(f"/api/chats/{chat}").status_code == 204
    assert hits(fresh_user, new) == []
    assert hits(fresh_user, old) == []


def test_messages_sent_through_the_api_are_found(server: Server) -> None:
    user = register_and_login(server)
    key = word()
    chat = new_chat(user)
    with user.client() as client:
        sent = client.post(f"/api/chats/{chat}/messages", json={"content": f"tell me {key}"})
    assert sent.status_code == 200, sent.text
    found = hits(user, key)
    assert "user" in [hit["role"] for hit in found], found


@pytest.mark.parametrize(
    "q",
    [
        "NEAR(a b)",
        "a AND OR NOT b",
        "col:a",
        "a*",
        "^a",
        "(a",
        "a)",
        "a + b - c",
        "'a' & !b | c <-> d",
        '\\"a\\"',
        '-"a or b" c',
        "or or or x",
        "ä ö ü 日本語 🙂",
        "x" * 256,
        " ".join(["ab"] * 32),
    ],
)
def test_hostile_queries_never_fail(alice: User, q: str) -> None:
    response = search(alice, q)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["items"], list)


@pytest.mark.parametrize(
    "q",
    [
        "",
        "   ",
        '"',
        '"""',
        "\\",
        "-a",
        "-a -b",
        '-"a b"',
        "!!! ???",
        "or",
        "a\x00b",
        "x" * 257,
        "ab " * 33,
    ],
)
def test_queries_that_find_nothing_are_refused(alice: User, q: str) -> None:
    response = search(alice, q)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_message"


@pytest.mark.parametrize(
    "params", [{"cursor": "not a cursor"}, {"cursor": "W10"}, {"limit": 0}, {"limit": 51}]
)
def test_bad_cursor_or_limit_is_refused(alice: User, params: dict[str, Any]) -> None:
    response = search(alice, "anything", **params)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_message"


def test_search_needs_a_login(server: Server) -> None:
    with server.client() as client:
        assert client.get("/api/search", params={"q": "a"}).status_code == 401
