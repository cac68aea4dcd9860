"""A chat's own generation settings (issue 16 point 3): ``temperature``, ``top_p`` and
``max_tokens`` next to its ``model`` and system prompt. Set, they go upstream with every
request of the chat's replies (the fake upstream records what it got); unset, the server's
``LLM_TEMPERATURE``, ``LLM_TOP_P`` and ``LLM_MAX_TOKENS`` hold; ``null`` in a ``PATCH``
returns one to the server's; an invalid value is refused with an error naming it and
changes nothing; a regenerated reply takes the chat's settings as they are then."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chatsvc.settings import ConfigError, load_settings
from tests.fake_openai import FakeOpenAI, Record, directive
from tests.support import (
    OTHER_MODEL,
    AppServer,
    Server,
    Socket,
    User,
    register_and_login,
    upstream_settings,
    wait_until,
)

SAMPLING = ("temperature", "top_p", "max_tokens")


def mark() -> str:
    return f"settings-{secrets.token_hex(4)}"


def requests_with(fake: FakeOpenAI, text: str) -> list[Record]:
    """The streamed upstream requests of replies to a message holding ``text``."""
    return [r for r in fake.records if r.stream and text in r.last_user_message]


def sent(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields of an upstream request, as sent (absent: not sent)."""
    return {name: body[name] for name in SAMPLING if name in body}


def reply_over_rest(user: User, chat_id: str, text: str) -> dict[str, Any]:
    with user.client() as client:
        answer = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": f"{text} {directive(tokens=2)}"}
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def create(user: User, **fields: Any) -> dict[str, Any]:
    with user.client() as client:
        answer = client.post("/api/chats", json=fields)
    assert answer.status_code == 201, answer.text
    return answer.json()


# --- what goes upstream -------------------------------------------------------------------


def test_a_chats_settings_reach_the_upstream_on_every_transport(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    """REST, the WebSocket and a chat started with its first message send the same."""
    chosen = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 77, "model": OTHER_MODEL}
    chat = create(alice, **chosen)
    assert {name: chat[name] for name in chosen} == chosen

    over_rest, over_socket, in_one_call = mark(), mark(), mark()
    reply_over_rest(alice, chat["id"], over_rest)
    with Socket(alice) as socket:
        started = socket.start(f"{over_socket} {directive(tokens=2)}", chat_id=chat["id"])
        assert socket.until_end(started["task_id"])[-1]["type"] == "done"
    with alice.client() as client:
        started_with = client.post(
            "/api/chats", json={**chosen, "content": f"{in_one_call} {directive(tokens=2)}"}
        )
    assert started_with.status_code == 200, started_with.text
    assert {name: started_with.json()["chat"][name] for name in chosen} == chosen

    for text in (over_rest, over_socket, in_one_call):
        [request] = requests_with(fake_llm, text)
        assert request.model == OTHER_MODEL
        assert sent(request.body) == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 77}


def test_unset_settings_fall_back_to_the_servers_and_null_returns_to_them(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    server = serve_app(
        **upstream_settings(fake_llm), LLM_TEMPERATURE="0.25", LLM_TOP_P="0.5", LLM_MAX_TOKENS="321"
    )
    user = register_and_login(server)
    chat = create(user, temperature=1.5)
    assert (chat["temperature"], chat["top_p"], chat["max_tokens"]) == (1.5, None, None)
    first, second, third = mark(), mark(), mark()

    reply_over_rest(user, chat["id"], first)
    with user.client() as client:
        changed = client.patch(f"/api/chats/{chat['id']}", json={"top_p": 0.75, "max_tokens": 9})
    assert changed.status_code == 200, changed.text
    reply_over_rest(user, chat["id"], second)
    with user.client() as client:
        reset = client.patch(
            f"/api/chats/{chat['id']}", json={"temperature": None, "max_tokens": None}
        )
        stored = client.get(f"/api/chats/{chat['id']}").json()
    assert reset.status_code == 200, reset.text
    reply_over_rest(user, chat["id"], third)

    assert (stored["temperature"], stored["top_p"], stored["max_tokens"]) == (None, 0.75, None)
    assert sent(requests_with(fake_llm, first)[-1].body) == {
        "temperature": 1.5,
        "top_p": 0.5,
        "max_tokens": 321,
    }
    assert sent(requests_with(fake_llm, second)[-1].body) == {
        "temperature": 1.5,
        "top_p": 0.75,
        "max_tokens": 9,
    }
    assert sent(requests_with(fake_llm, third)[-1].body) == {
        "temperature": 0.25,
        "top_p": 0.75,
        "max_tokens": 321,
    }


def test_with_nothing_set_anywhere_nothing_is_sent(alice: User, fake_llm: FakeOpenAI) -> None:
    """The shared server sets none of LLM_TEMPERATURE, LLM_TOP_P, LLM_MAX_TOKENS."""
    chat = create(alice)
    assert (chat["temperature"], chat["top_p"], chat["max_tokens"]) == (None, None, None)
    text = mark()
    reply_over_rest(alice, chat["id"], text)
    assert sent(requests_with(fake_llm, text)[-1].body) == {}


def test_a_regenerated_reply_takes_the_chats_settings_as_they_are_now(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    chat = create(alice, temperature=0.2, max_tokens=50)
    text = mark()
    reply = reply_over_rest(alice, chat["id"], text)["message"]
    with alice.client() as client:
        changed = client.patch(
            f"/api/chats/{chat['id']}",
            json={"temperature": 0.7, "top_p": 0.4, "model": OTHER_MODEL},
        )
        assert changed.status_code == 200, changed.text
        again = client.post(f"/api/chats/{chat['id']}/messages/{reply['id']}/regenerate")
    assert again.status_code == 200, again.text
    assert again.json()["message"]["model"] == OTHER_MODEL
    before, after = requests_with(fake_llm, text)
    assert sent(before.body) == {"temperature": 0.2, "max_tokens": 50}
    assert sent(after.body) == {"temperature": 0.7, "top_p": 0.4, "max_tokens": 50}
    assert after.model == OTHER_MODEL


def test_titles_keep_their_own_short_settings(titled: Server, fake_llm: FakeOpenAI) -> None:
    """Naming a chat is one short request of its own: 32 tokens, none of the chat's sampling."""
    user = register_and_login(titled)
    text = mark()
    with user.client() as client:
        started = client.post(
            "/api/chats",
            json={
                "temperature": 1.9,
                "top_p": 0.2,
                "max_tokens": 900,
                "content": f"{text} {directive(tokens=2)}",
            },
        )
    assert started.status_code == 200, started.text
    [streamed] = requests_with(fake_llm, text)
    assert sent(streamed.body) == {"temperature": 1.9, "top_p": 0.2, "max_tokens": 900}
    named = titled_request(fake_llm, text)
    assert sent(named.body) == {"max_tokens": 32}


def titled_request(fake: FakeOpenAI, text: str) -> Record:
    """The title request of the chat whose first message holds ``text`` (it follows the
    reply's ``done``, so it may still be on its way)."""
    found = wait_until(
        lambda: [r for r in fake.records if not r.stream and text in str(r.messages)],
        what="the title request",
    )
    return found[0]


# --- refused values ------------------------------------------------------------------------


BAD_VALUES = [
    ("temperature", 2.5, 400, "temperature"),
    ("temperature", -0.1, 400, "temperature"),
    ("temperature", "warm", 400, "temperature"),
    ("top_p", 0, 400, "top_p"),
    ("top_p", 1.01, 400, "top_p"),
    ("max_tokens", 0, 400, "max_tokens"),
    ("max_tokens", 12.5, 400, "max_tokens"),
    ("max_tokens", True, 400, "max_tokens"),
    ("max_tokens", 1_000_001, 400, "max_tokens"),
    ("max_tokens", 32_769, 422, "LLM_MAX_TOKENS_LIMIT"),
]


@pytest.mark.parametrize(("field", "value", "status", "named"), BAD_VALUES)
def test_an_invalid_setting_is_refused_and_changes_nothing(
    fresh_user: User, field: str, value: object, status: int, named: str
) -> None:
    kept = {"temperature": 0.5, "top_p": 0.5, "max_tokens": 100, "model": OTHER_MODEL}
    with fresh_user.client() as client:
        refused_create = client.post("/api/chats", json={"title": "refused", field: value})
        refused_start = client.post("/api/chats", json={field: value, "content": "hello"})
        assert client.get("/api/chats").json()["items"] == []  # nothing was created
        chat = client.post("/api/chats", json=kept).json()
        refused_patch = client.patch(
            f"/api/chats/{chat['id']}", json={"title": "renamed", "model": None, field: value}
        )
        stored = client.get(f"/api/chats/{chat['id']}").json()
    for answer in (refused_create, refused_start, refused_patch):
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert body["code"] == "invalid_message"
        assert field in body["detail"], body
        assert named in body["detail"], body
    assert stored["title"] == "New chat"  # the rest of the refused PATCH did not happen either
    assert {name: stored[name] for name in kept} == kept


def test_a_lowered_limit_caps_a_length_stored_before(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    """``LLM_MAX_TOKENS_LIMIT`` bounds what a chat may ask; a chat that asked for more
    before the operator lowered it keeps its setting but is sent the limit."""
    server = serve_app(**upstream_settings(fake_llm), LLM_MAX_TOKENS_LIMIT="100")
    user = register_and_login(server)
    with user.client() as client:
        refused = client.post("/api/chats", json={"max_tokens": 101})
    assert refused.status_code == 422, refused.text
    assert "(100, LLM_MAX_TOKENS_LIMIT)" in refused.json()["detail"]
    chat = create(user, max_tokens=100)
    server.db.query("UPDATE chat SET max_tokens = ? WHERE id = ?", 5000, uuid.UUID(chat["id"]))
    text = mark()
    reply_over_rest(user, chat["id"], text)
    assert sent(requests_with(fake_llm, text)[-1].body) == {"max_tokens": 100}


def test_the_servers_settings_are_checked_at_start() -> None:
    base = {"DATABASE_URL": "sqlite:///x.db"}
    assert load_settings({**base, "LLM_TOP_P": "0.9"}, env_file=None).llm_top_p == 0.9
    for variable, value in (
        ("LLM_TOP_P", "0"),
        ("LLM_TOP_P", "1.5"),
        ("LLM_MAX_TOKENS_LIMIT", "0"),
        ("LLM_MAX_TOKENS_LIMIT", "1000001"),
    ):
        with pytest.raises(ConfigError, match=variable):
            load_settings({**base, variable: value}, env_file=None)
    with pytest.raises(ConfigError, match="LLM_MAX_TOKENS='500' expects at most LLM_MAX_TOK"):
        load_settings(
            {**base, "LLM_MAX_TOKENS": "500", "LLM_MAX_TOKENS_LIMIT": "400"}, env_file=None
        )
