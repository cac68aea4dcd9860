"""Share links (issue 17, point 3; docs/protocol.md section 3.4): a read-only snapshot of a
chat's active branch, readable without login at an unguessable link; its owner lists and
revokes links; a revoked link, or one of a deleted chat, answers the same 404 as a token
never made."""

from __future__ import annotations

import hashlib
import threading
import uuid
from typing import Any

import httpx
import pytest

from chatsvc.logs import redact
from tests.fake_openai import directive
from tests.support import Server, User, register_and_login, wait_until
from tests.support.http import tls
from tests.test_generation_rest import read_sse

TOKEN_LENGTH = len("shr_") + 43  # secrets.token_urlsafe(32)


def new_chat(user: User, title: str = "Shared chat") -> str:
    with user.client() as client:
        created = client.post("/api/chats", json={"title": title})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def send(user: User, chat_id: str, content: str, **fields: Any) -> dict[str, Any]:
    """Send a message and wait for the finished reply."""
    with user.client() as client:
        answer = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": content, **fields}, timeout=30
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def share(user: User, chat_id: str) -> httpx.Response:
    with user.client() as client:
        return client.post(f"/api/chats/{chat_id}/share")


def shared(server: Server, token: str) -> httpx.Response:
    """The public read: no Authorization header at all."""
    with httpx.Client(base_url=server.url, timeout=10, verify=tls()) as client:
        return client.get(f"/api/shared/{token}")


def texts(answer: httpx.Response) -> list[tuple[str, str]]:
    assert answer.status_code == 200, answer.text
    return [(m["role"], m["content"]) for m in answer.json()["messages"]]


def listed(user: User, chat_id: str | None = None) -> list[dict[str, Any]]:
    path = f"/api/chats/{chat_id}/shares" if chat_id else "/api/shares"
    with user.client() as client:
        answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def revoke(user: User, share_id: str) -> httpx.Response:
    with user.client() as client:
        return client.delete(f"/api/shares/{share_id}")


@pytest.fixture
def never_made(server: Server) -> httpx.Response:
    """What a token that was never made answers: every missing link must answer the same."""
    return shared(server, "shr_" + "A" * 43)


def assert_missing(answer: httpx.Response, never_made: httpx.Response) -> None:
    assert answer.status_code == 404
    assert answer.json() == never_made.json()
    assert answer.json()["code"] == "not_found"
    assert answer.headers["cache-control"] == "no-store"


def test_a_link_shows_the_chat_without_login_and_only_its_hash_is_stored(
    server: Server, fresh_user: User
) -> None:
    chat_id = new_chat(fresh_user, "Trip plans")
    reply = send(fresh_user, chat_id, "first question")["message"]["content"]

    made = share(fresh_user, chat_id)
    assert made.status_code == 201, made.text
    link = made.json()
    token = link["token"]
    assert token.startswith("shr_")
    assert len(token) == TOKEN_LENGTH
    assert link["url"] == f"/share/{token}"
    assert link["prefix"] == token[:12]
    assert (link["chat_id"], link["title"]) == (chat_id, "Trip plans")

    answer = shared(server, token)
    assert texts(answer) == [("user", "first question"), ("assistant", reply)]
    body = answer.json()
    assert body["title"] == "Trip plans"
    assert body["shared_at"] == link["created_at"]
    assert body["messages"][1]["model"] == "fake-model"
    assert answer.headers["cache-control"] == "no-store"
    assert "noindex" in answer.headers["x-robots-tag"]

    # Listed by the owner without the token; the database keeps its hash, not the token.
    [item] = listed(fresh_user, chat_id)
    assert item == {k: v for k, v in link.items() if k not in ("token", "url")}
    assert listed(fresh_user) == [item]
    [row] = server.db.query("SELECT * FROM chat_share WHERE id = ?", uuid.UUID(link["id"]))
    assert row["hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row)
    assert token[12:] not in str(row)


def test_the_snapshot_does_not_follow_later_edits_and_regenerations(
    server: Server, fresh_user: User
) -> None:
    chat_id = new_chat(fresh_user)
    first = send(fresh_user, chat_id, "question one")
    token = share(fresh_user, chat_id).json()["token"]
    before = texts(shared(server, token))

    # Regenerate the reply, edit the question (a new branch), and go on talking.
    with fresh_user.client() as client:
        again = client.post(
            f"/api/chats/{chat_id}/messages/{first['message_id']}/regenerate", timeout=30
        )
    assert again.status_code == 200, again.text
    send(fresh_user, chat_id, "question one, edited", parent_id=None)  # a new first message
    send(fresh_user, chat_id, "question two")

    assert texts(shared(server, token)) == before
    # A new link shows the branch as it is now.
    now = texts(shared(server, share(fresh_user, chat_id).json()["token"]))
    assert [text for role, text in now if role == "user"] == [
        "question one, edited",
        "question two",
    ]


def test_a_revoked_link_answers_like_one_never_made(
    server: Server, fresh_user: User, never_made: httpx.Response
) -> None:
    chat_id = new_chat(fresh_user)
    send(fresh_user, chat_id, "something to share")
    kept, doomed = share(fresh_user, chat_id).json(), share(fresh_user, chat_id).json()
    assert {s["id"] for s in listed(fresh_user, chat_id)} == {kept["id"], doomed["id"]}

    assert revoke(fresh_user, doomed["id"]).status_code == 204
    assert_missing(shared(server, doomed["token"]), never_made)
    assert [s["id"] for s in listed(fresh_user, chat_id)] == [kept["id"]]
    assert revoke(fresh_user, doomed["id"]).status_code == 404  # revoked already
    assert shared(server, kept["token"]).status_code == 200  # the other link still works


def test_deleting_the_chat_ends_its_links(
    server: Server, fresh_user: User, never_made: httpx.Response
) -> None:
    chat_id = new_chat(fresh_user)
    send(fresh_user, chat_id, "soon gone")
    link = share(fresh_user, chat_id).json()
    with fresh_user.client() as client:
        assert client.delete(f"/api/chats/{chat_id}").status_code == 204
    assert_missing(shared(server, link["token"]), never_made)
    assert listed(fresh_user) == []
    assert server.db.query("SELECT id FROM chat_share WHERE id = ?", uuid.UUID(link["id"])) == []


def test_another_user_can_neither_share_nor_see_nor_revoke_the_links(
    server: Server, fresh_user: User
) -> None:
    chat_id = new_chat(fresh_user)
    send(fresh_user, chat_id, "mine")
    link = share(fresh_user, chat_id).json()
    other = register_and_login(server)

    refused = share(other, chat_id)
    assert (refused.status_code, refused.json()["code"]) == (404, "not_found")
    with other.client() as client:
        assert client.get(f"/api/chats/{chat_id}/shares").status_code == 404
    assert listed(other) == []
    assert revoke(other, link["id"]).status_code == 404
    assert shared(server, link["token"]).status_code == 200  # untouched
    assert [s["id"] for s in listed(fresh_user)] == [link["id"]]


def test_managing_links_needs_a_login(server: Server, fresh_user: User) -> None:
    chat_id = new_chat(fresh_user)
    link = share(fresh_user, chat_id).json()
    with httpx.Client(base_url=server.url, timeout=10, verify=tls()) as anonymous:
        assert anonymous.post(f"/api/chats/{chat_id}/share").status_code == 401
        assert anonymous.get(f"/api/chats/{chat_id}/shares").status_code == 401
        assert anonymous.get("/api/shares").status_code == 401
        assert anonymous.delete(f"/api/shares/{link['id']}").status_code == 401
    assert shared(server, link["token"]).status_code == 200


@pytest.mark.parametrize(
    "token",
    ["", "shr_", "shr_" + "A" * 42, "shr_" + "A" * 44, "x" * 47, "shr_" + "%00" * 43, "a" * 4000],
)
def test_any_other_token_is_the_same_not_found(
    server: Server, token: str, never_made: httpx.Response
) -> None:
    answer = shared(server, token)
    if token == "":  # `/api/shared/`: no such route at all
        assert answer.status_code == 404
        return
    assert_missing(answer, never_made)


def test_bad_ids_are_precise_errors(server: Server, fresh_user: User) -> None:
    with fresh_user.client() as client:
        for answer in (
            client.post("/api/chats/not-a-uuid/share"),
            client.get("/api/chats/not-a-uuid/shares"),
            client.delete("/api/shares/not-a-uuid"),
        ):
            assert (answer.status_code, answer.json()["code"]) == (400, "invalid_message")
        assert client.post(f"/api/chats/{uuid.uuid4()}/share").status_code == 404
        assert client.delete(f"/api/shares/{uuid.uuid4()}").status_code == 404


def test_an_empty_chat_shares_an_empty_snapshot(server: Server, fresh_user: User) -> None:
    chat_id = new_chat(fresh_user, "Nothing yet")
    answer = shared(server, share(fresh_user, chat_id).json()["token"])
    assert texts(answer) == []
    assert answer.json()["title"] == "Nothing yet"


def test_a_reply_still_streaming_is_left_out(server: Server, fresh_user: User) -> None:
    chat_id = new_chat(fresh_user)
    send(fresh_user, chat_id, "done already")
    slow = f"still streaming {directive(tokens=40, rate=20)}"  # about two seconds
    streamed = threading.Thread(target=read_sse, args=(fresh_user, chat_id, slow), daemon=True)
    streamed.start()
    wait_until(
        lambda: server.db.query(
            "SELECT id FROM message WHERE chat = ? AND status = 'streaming'", uuid.UUID(chat_id)
        ),
        what="the reply to start streaming",
    )
    token = share(fresh_user, chat_id).json()["token"]
    streamed.join(timeout=30)
    roles = [role for role, _ in texts(shared(server, token))]
    assert roles == ["user", "assistant", "user"]  # the question is in, its unfinished reply not
    assert texts(shared(server, token))[-1] == ("user", slow)


def test_the_page_needs_no_login_and_is_never_cached_nor_indexed(
    server: Server, fresh_user: User
) -> None:
    token = share(fresh_user, new_chat(fresh_user)).json()["token"]
    with httpx.Client(base_url=server.url, timeout=10, verify=tls()) as anonymous:
        page = anonymous.get(f"/share/{token}")
        script = anonymous.get("/static/share.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/share.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["cache-control"] == "no-store"
    assert "noindex" in page.headers["x-robots-tag"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert script.status_code == 200
    assert 'from "./message-text.js"' in script.text


def test_tokens_stay_out_of_the_logs(server: Server, fresh_user: User) -> None:
    chat_id = new_chat(fresh_user)
    link = share(fresh_user, chat_id).json()
    token = link["token"]
    with httpx.Client(base_url=server.url, timeout=10, verify=tls()) as anonymous:
        assert anonymous.get(f"/share/{token}").status_code == 200
        assert anonymous.get(f"/api/shared/{token}").status_code == 200
        assert anonymous.get(f"/api/shared/{token}x").status_code == 404
    assert revoke(fresh_user, link["id"]).status_code == 204
    wait_until(
        lambda: f"share_id={link['id']}" in server.log() and "share_revoked" in server.log(),
        what="the audit line of the revocation",
    )
    log = server.log()
    assert token[12:] not in log
    assert '"GET /share/[redacted] HTTP/1.1" 200' in log  # the access log has the line
    assert '"GET /api/shared/[redacted] HTTP/1.1" 200' in log
    assert redact(f'"GET /share/{token} HTTP/1.1" 200') == '"GET /share/[redacted] HTTP/1.1" 200'
    assert redact(f"GET /api/shared/{token}") == "GET /api/shared/[redacted]"
    assert redact(f"prefix={token[:12]}") == f"prefix={token[:12]}"  # the shown prefix stays


def test_a_chat_keeps_at_most_fifty_links(server: Server, fresh_user: User) -> None:
    chat_id = new_chat(fresh_user)
    made = [share(fresh_user, chat_id) for _ in range(50)]
    assert {answer.status_code for answer in made} == {201}
    refused = share(fresh_user, chat_id)
    assert (refused.status_code, refused.json()["code"]) == (409, "limit_reached")
    assert revoke(fresh_user, made[0].json()["id"]).status_code == 204
    assert share(fresh_user, chat_id).status_code == 201  # a revoked one makes room
    assert share(fresh_user, new_chat(fresh_user)).status_code == 201  # per chat, not per user
