"""Export and import (issue 17, point 2): a chat as JSON (every branch, statuses, usage,
feedback) or Markdown, every chat as JSON lines, and ``POST /api/import`` of our own
exports and of ChatGPT's ``conversations.json`` (tests/data), whole or not at all.
Real servers, both engines."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, Socket, User, register_and_login

DATA = Path(__file__).parent / "data"
CHATGPT = (DATA / "chatgpt-conversations.json").read_bytes()
ENDS = ("done", "aborted", "error")


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def chat_with_branches(user: User, title: str = "Round trip") -> str:
    """A chat with settings, two questions, a regenerated reply (two branches), a
    rating: what an export must carry."""
    with user.client() as client:
        chat = ok(
            client.post(
                "/api/chats",
                json={"title": title, "system_prompt": "Be brief.", "temperature": 0.3},
            ),
            201,
        )
        chat_id = chat["id"]
        first = ok(client.post(f"/api/chats/{chat_id}/messages", json={"content": "one"}))
        second = ok(client.post(f"/api/chats/{chat_id}/messages", json={"content": "two"}))
        again = f"/api/chats/{chat_id}/messages/{second['message_id']}/regenerate"
        ok(client.post(again, json={}))
        rated = f"/api/chats/{chat_id}/messages/{first['message_id']}/feedback"
        ok(client.put(rated, json={"rating": "down", "comment": "too long"}))
    return chat_id


def export(user: User, chat_id: str, file_format: str = "json") -> httpx.Response:
    with user.client() as client:
        return client.get(f"/api/chats/{chat_id}/export", params={"format": file_format})


def import_file(user: User, body: bytes, content_type: str = "application/json") -> httpx.Response:
    with user.client() as client:
        return client.post("/api/import", content=body, headers={"Content-Type": content_type})


def chat_count(user: User) -> int:
    with user.client() as client:
        return len(ok(client.get("/api/chats", params={"limit": 200}))["items"])


def without_ids(document: dict[str, Any]) -> dict[str, Any]:
    """The export with each message id replaced by its place (ids are new on import),
    and without the chat's id and the export's time: what a round trip keeps."""
    chat = dict(document["chat"])
    place = {m["id"]: index for index, m in enumerate(chat["messages"])}
    chat["messages"] = [
        {**m, "id": place[m["id"]], "parent_id": place.get(m["parent_id"])}
        for m in chat["messages"]
    ]
    chat["active_leaf_id"] = place.get(chat["active_leaf_id"])
    del chat["id"]
    return {**document, "chat": chat, "exported_at": None}


def test_a_chat_exported_and_imported_by_another_user_exports_the_same(
    server: Server,
) -> None:
    owner, other = register_and_login(server), register_and_login(server)
    chat_id = chat_with_branches(owner)
    exported = export(owner, chat_id)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/json")
    assert exported.headers["content-disposition"] == 'attachment; filename="Round-trip.json"'
    document = exported.json()
    assert (document["format"], document["version"]) == ("chatsvc.export", 1)
    messages = document["chat"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "assistant"]
    assert [m["status"] for m in messages] == ["complete"] * 5
    assert all(m["usage"] is not None for m in messages if m["role"] == "assistant")
    rated = [m for m in messages if m["feedback"]]
    assert [(m["feedback"]["rating"], m["feedback"]["comment"]) for m in rated] == [
        ("down", "too long")
    ]
    assert document["chat"]["active_leaf_id"] == messages[-1]["id"]  # the regenerated one
    assert document["chat"]["temperature"] == 0.3

    report = ok(import_file(other, exported.content))
    assert report["skipped"] == []
    [copy_id] = report["imported"]
    assert copy_id != chat_id
    again = export(other, copy_id).json()
    assert without_ids(again) == without_ids(document)
    assert {m["id"] for m in again["chat"]["messages"]}.isdisjoint(m["id"] for m in messages)
    # The copy is the other user's chat as any other: listed, shown on its active branch.
    with other.client() as client:
        shown = ok(client.get(f"/api/chats/{copy_id}"))
    assert [m["content"] for m in shown["messages"]] == [
        messages[i]["content"] for i in (0, 1, 2, 4)
    ]
    assert shown["messages"][-1]["sibling_count"] == 2


def test_every_chat_exports_as_json_lines_and_imports_back(fresh_user: User) -> None:
    titles = ["first", "second", "third"]
    ids = [chat_with_branches(fresh_user, title) for title in titles]
    with fresh_user.client() as client, client.stream("GET", "/api/me/export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        disposition = response.headers["content-disposition"]
        body = b"".join(response.iter_bytes())
    assert disposition == 'attachment; filename="chatsvc-export.jsonl"'
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["chat"]["id"] for line in lines] == ids
    assert [line["chat"]["title"] for line in lines] == titles
    assert lines[0] == {**export(fresh_user, ids[0]).json(), "exported_at": lines[0]["exported_at"]}

    other = register_and_login(fresh_user.server)
    report = ok(import_file(other, body, "application/x-ndjson"))
    assert len(report["imported"]) == 3
    copies = [export(other, chat_id).json() for chat_id in report["imported"]]
    assert [without_ids(c) for c in copies] == [without_ids(line) for line in lines]


def test_the_markdown_export_is_the_active_conversation(fresh_user: User) -> None:
    chat_id = chat_with_branches(fresh_user, 'Tapas: "the best"/ñ?')
    response = export(fresh_user, chat_id, "markdown")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/markdown")
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="Tapas-the-best-n.md"'
    text = response.text
    document = export(fresh_user, chat_id).json()["chat"]
    first_reply, replaced, second_reply = (document["messages"][i] for i in (1, 3, 4))
    assert text.startswith('# Tapas: "the best"/ñ?\n')
    assert "## System prompt\n\nBe brief.\n" in text
    assert text.count("## You\n") == 2
    assert "\n\none\n" in text
    assert "\n\ntwo\n" in text
    assert second_reply["content"] in text  # the regenerated reply: the active branch
    assert first_reply["content"] in text
    assert text.count(replaced["content"]) == text.count(second_reply["content"])
    assert "*Your rating: 👎: too long*" in text


def test_another_users_chat_cannot_be_exported(alice: User, bob: User) -> None:
    with alice.client() as client:
        chat_id = ok(client.post("/api/chats", json={"title": "alice only"}), 201)["id"]
    for file_format in ("json", "markdown"):
        refused = export(bob, chat_id, file_format)
        assert refused.status_code == 404, refused.text
        assert refused.json()["code"] == "not_found"
    with bob.client() as client:
        body = client.get("/api/me/export").content
    assert chat_id.encode() not in body
    assert export(alice, chat_id, "pdf").status_code == 400


def test_chatgpt_conversations_become_trees_with_a_report(fresh_user: User) -> None:
    report = ok(import_file(fresh_user, CHATGPT))
    assert len(report["imported"]) == 2
    assert sorted((s["index"], s["reason"]) for s in report["skipped"]) == [
        (0, "1 message left out: a system message"),
        (0, "1 message left out: a tool message"),
        (0, "1 message left out: non-text content (code)"),
        (1, "1 message left out: no text (images or files only)"),
        (2, "1 message left out: a system message"),
        (2, "chat skipped: no text message to import"),
    ]
    assert {s["title"] for s in report["skipped"]} == {
        "Trip to Lisbon",
        "What cat is this?",
        "Only a system prompt",
    }
    lisbon, cat = (export(fresh_user, chat_id).json()["chat"] for chat_id in report["imported"])

    assert lisbon["title"] == "Trip to Lisbon"
    assert lisbon["model"] is None  # gpt-4o is not offered here
    by_content = {m["content"][:12]: m for m in lisbon["messages"]}
    question, first, second = (
        by_content[k] for k in ("Plan three d", "Day 1: Alfam", "Here is a sl")
    )
    follow_up, answer = by_content["How far is B"], by_content["About 7 km: "]
    assert question["parent_id"] is None
    assert first["parent_id"] == second["parent_id"] == question["id"]  # two branches
    assert follow_up["parent_id"] == second["id"]
    assert answer["parent_id"] == follow_up["id"]  # the code and tool nodes left out
    assert answer["model"] == "gpt-4o-mini"
    assert lisbon["active_leaf_id"] == answer["id"]  # ChatGPT's current_node
    assert all(m["status"] == "complete" for m in lisbon["messages"])
    assert question["created_at"].startswith("2024-12-06T10:15:00")

    [user_message, reply] = cat["messages"]
    assert user_message["content"] == "What breed is this cat?"
    assert reply["parent_id"] == user_message["id"]
    with fresh_user.client() as client:
        shown = ok(client.get(f"/api/chats/{report['imported'][0]}"))["messages"]
    assert [m["content"][:12] for m in shown] == [
        "Plan three d",
        "Here is a sl",
        "How far is B",
        "About 7 km: ",
    ]
    assert shown[1]["sibling_count"] == 2


def test_an_imported_chat_goes_on_over_the_websocket(spawn_server: Any) -> None:
    server = spawn_server()  # the echo provider
    user = register_and_login(server)
    chat_id = ok(import_file(user, CHATGPT))["imported"][0]
    leaf = export(user, chat_id).json()["chat"]["active_leaf_id"]
    with Socket(user) as socket:
        socket.send(action="send_message", chat_id=chat_id, content="And Sintra?")
        frames = socket.until(lambda f: f["type"] in ENDS)
        assert frames[-1]["type"] == "done", frames
    with user.client() as client:
        shown = ok(client.get(f"/api/chats/{chat_id}"))["messages"]
        assert shown[-2]["content"] == "And Sintra?"
        assert shown[-2]["parent_id"] == leaf
        assert shown[-1]["status"] == "complete"
        # A regeneration of an imported reply starts a branch beside it.
        again = f"/api/chats/{chat_id}/messages/{leaf}/regenerate"
        ok(client.post(again, json={}))
        assert ok(client.get(f"/api/chats/{chat_id}"))["messages"][-1]["sibling_count"] == 2


def ours(**chat: Any) -> dict[str, Any]:
    """A well-formed single-chat export, changed by ``chat``."""
    return {
        "format": "chatsvc.export",
        "version": 1,
        "exported_at": "2026-12-06T10:00:00Z",
        "chat": {
            "id": "00000000-0000-4000-8000-000000000001",
            "title": "made by hand",
            "created_at": "2026-12-06T09:00:00Z",
            "updated_at": "2026-12-06T09:00:00Z",
            "messages": [
                {
                    "id": "00000000-0000-4000-8000-000000000002",
                    "parent_id": None,
                    "role": "user",
                    "content": "hi",
                    "status": "complete",
                    "created_at": "2026-12-06T09:00:01Z",
                }
            ],
            **chat,
        },
    }


BAD_FILES = {
    "not JSON": b"this is no json",
    "a bad line": json.dumps(ours()).encode() + b"\n{oops\n",
    "an object of no known shape": b'{"hello": "world"}',
    "an array of numbers": b"[1, 2]",
    "an unknown version": json.dumps({**ours(), "version": 2}).encode(),
    "a title of the wrong type": json.dumps(ours(title=5)).encode(),
    "an unknown status": json.dumps(
        ours(messages=[{**ours()["chat"]["messages"][0], "status": "thinking"}])
    ).encode(),
    "a parent outside the chat": json.dumps(
        ours(
            messages=[
                {
                    **ours()["chat"]["messages"][0],
                    "parent_id": "00000000-0000-4000-8000-00000000000f",
                }
            ]
        )
    ).encode(),
    "a ChatGPT mapping of the wrong type": b'[{"title": "x", "mapping": []}]',
    "a valid chat, then a broken one": json.dumps([ours(), {"mapping": {"a": 1}}]).encode(),
    "empty": b"  ",
}


@pytest.mark.parametrize("body", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_malformed_file_imports_nothing(fresh_user: User, body: bytes) -> None:
    refused = import_file(fresh_user, body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_import"
    assert "Traceback" not in refused.text
    assert chat_count(fresh_user) == 0


def test_a_well_formed_file_made_by_hand_imports(fresh_user: User) -> None:
    report = ok(import_file(fresh_user, json.dumps(ours()).encode()))
    assert len(report["imported"]) == 1
    assert chat_count(fresh_user) == 1


def test_limits_refuse_a_file_whole_or_skip_a_chat(spawn_server: Any) -> None:
    server = spawn_server(
        IMPORT_MAX_BYTES="16384",
        IMPORT_MAX_CHATS="3",
        IMPORT_MAX_MESSAGES_PER_CHAT="4",
        MAX_CHATS_PER_USER="3",
    )
    user = register_and_login(server)
    line = json.dumps(ours()).encode() + b"\n"

    too_big = import_file(user, line + b" " * 16384, "application/x-ndjson")
    assert (too_big.status_code, too_big.json()["code"]) == (413, "too_large")
    too_many = import_file(user, line * 4, "application/x-ndjson")
    assert (too_many.status_code, too_many.json()["code"]) == (413, "too_large")
    as_text = import_file(user, line, "text/plain")
    assert as_text.status_code == 415, as_text.text
    assert chat_count(user) == 0

    # The Lisbon trip has 5 messages: skipped, named; the cat is imported.
    report = ok(import_file(user, CHATGPT))
    assert len(report["imported"]) == 1
    assert any(
        s["title"] == "Trip to Lisbon" and re.search(r"5 messages, more than", s["reason"])
        for s in report["skipped"]
    )
    ok(import_file(user, line))  # 2 chats kept
    over = import_file(user, line * 2, "application/x-ndjson")
    assert (over.status_code, over.json()["code"]) == (409, "limit_reached")
    assert chat_count(user) == 2


def test_an_import_keeps_the_rules_of_the_tree(fresh_user: User) -> None:
    """A reply still streaming comes in interrupted, a child older than its parent comes
    after it, a reply with no question before it is left out (named), and its question
    starts the chat; the active leaf is a leaf."""
    ids = [f"00000000-0000-4000-8000-00000000001{n}" for n in range(4)]
    messages = [
        {"id": ids[0], "parent_id": None, "role": "assistant", "content": "orphan",
         "status": "complete", "created_at": "2026-12-06T09:00:00Z"},
        {"id": ids[1], "parent_id": ids[0], "role": "user", "content": "question",
         "status": "complete", "created_at": "2026-12-06T09:00:05Z"},
        {"id": ids[2], "parent_id": ids[1], "role": "assistant", "content": "half a",
         "status": "streaming", "created_at": "2026-12-06T09:00:01Z"},
    ]  # fmt: skip
    document = ours(messages=messages, active_leaf_id=ids[1])
    report = ok(import_file(fresh_user, json.dumps(document).encode()))
    assert [s["reason"] for s in report["skipped"]] == [
        "1 message left out: an assistant message that follows nothing"
    ]
    chat = export(fresh_user, report["imported"][0]).json()["chat"]
    question, reply = chat["messages"]
    assert (question["content"], question["parent_id"]) == ("question", None)
    assert (reply["content"], reply["parent_id"], reply["status"]) == (
        "half a",
        question["id"],
        "interrupted",
    )
    assert datetime.fromisoformat(reply["created_at"]) == datetime.fromisoformat(
        question["created_at"]
    ) + timedelta(microseconds=1)
    assert chat["active_leaf_id"] == reply["id"]  # the leaf below the one named
