"""A conversation longer than the model's context (issue 13 point 3).

Each real server answers an overflowing prompt its own way, and the fake
upstream answers as each does (``Script.profile``): OpenAI a 400 with code
``context_length_exceeded``, vLLM a 400 naming its maximum context length,
llama.cpp's server a 400 ``exceed_context_size_error`` with ``n_ctx``, and
llama-cpp-python a 200 with an empty stream. chatsvc retries once with about
half the older history, learns a stated limit for the next messages, refuses a
message that cannot fit before calling the upstream, and caps its budget by the
context length a server states at start (vLLM's ``max_model_len``, llama.cpp's
``/props``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    AppServer,
    Database,
    Server,
    Socket,
    User,
    insert_message,
    register_and_login,
    start_app_server,
    upstream_settings,
)

#: The servers that name their context length when they refuse a prompt.
STATING = ("openai", "vllm", "llama-server")
PROFILES = (*STATING, "llama-cpp-python")


def marker() -> str:
    return f"ctx-{secrets.token_hex(4)}"


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[FakeOpenAI]:
    """A fake upstream of its own (what it states at start is read once per server)."""
    script: Script = getattr(request, "param", Script(tokens=3))
    fake = FakeOpenAI(script).start()
    yield fake
    fake.stop()


@pytest.fixture
def chatsvc(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeOpenAI,
) -> Iterator[tuple[AppServer, User]]:
    server = start_app_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp("context"),
        **{**upstream_settings(upstream), "MODELS": "fake-model"},
    )
    try:
        yield server, register_and_login(server)
    finally:
        server.stop()


def new_chat(user: User) -> str:
    with user.client() as client:
        return client.post("/api/chats", json={}).json()["id"]


def fill_history(server: Server, chat_id: str, messages: int, chars: int) -> None:
    for index in range(messages):
        role = "user" if index % 2 == 0 else "assistant"
        insert_message(server.db, chat_id, f"{index} " + "h" * chars, role=role)


def send(user: User, chat_id: str | None, content: str) -> dict[str, Any]:
    """Send over the WebSocket; the frame that ended it (terminal event, or a refusal)."""
    with Socket(user) as ws:
        fields = {"chat_id": chat_id} if chat_id else {}
        ws.send(action="send_message", content=content, **fields)
        started = ws.until(lambda f: f["type"] in ("started", "error"))[-1]
        if started["type"] == "error":
            return started
        frames = ws.until_end(started["task_id"])
        return frames[-1]


def prompt_chars(record: Any) -> int:
    return sum(len(str(m.get("content") or "")) for m in record.messages)


@pytest.mark.parametrize("profile", PROFILES)
def test_overflow_is_retried_with_a_shorter_history(
    chatsvc: tuple[Server, User], upstream: FakeOpenAI, profile: str
) -> None:
    server, user = chatsvc
    banner = "  Context    not stated by the model server; history budget 8000 tokens ("
    assert banner in server.log()
    chat_id = new_chat(user)
    fill_history(server, chat_id, messages=8, chars=400)  # about 800 tokens
    overflowing = directive(profile=profile, context_tokens=600)

    first = marker()
    end = send(user, chat_id, f"{first} {overflowing}")

    assert end["type"] == "done", end
    assert end["message"]["content"] == Script(tokens=3).expected_text()
    tried, retried = upstream.records_for(first)
    assert tried.overflowed
    assert not retried.overflowed
    assert len(retried.messages) < len(tried.messages)
    assert retried.messages[0]["role"] == "system"
    assert first in retried.messages[-1]["content"]  # the newest message always goes
    assert prompt_chars(retried) < prompt_chars(tried)

    # The next message: a server that named its limit is not sent too much again.
    second = marker()
    end = send(user, chat_id, f"{second} {overflowing}")
    assert end["type"] == "done", end
    records = upstream.records_for(second)
    if profile in STATING:
        assert [r.overflowed for r in records] == [False]
    else:  # llama-cpp-python says nothing: an empty stream each time, then the retry
        assert [r.overflowed for r in records] == [True, False]


@pytest.mark.parametrize("profile", PROFILES)
def test_a_message_the_model_cannot_take_alone_fails_clearly(
    chatsvc: tuple[Server, User], upstream: FakeOpenAI, profile: str
) -> None:
    _, user = chatsvc
    tag = marker()
    end = send(user, None, f"{tag} {directive(profile=profile, context_tokens=100)} " + "x" * 1000)

    assert end["type"] == "error", end
    if profile in STATING:
        assert end["code"] == "too_large"
        assert end["message"] == "the message is longer than the model's context; shorten it"
    else:
        assert end["code"] == "llm_error"
        assert end["message"] == "the model server sent an empty reply"
    assert [r.overflowed for r in upstream.records_for(tag)] == [True]  # no shorter history
    with user.client() as client:
        messages = client.get(f"/api/chats/{end['chat_id']}/messages").json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "failed"
    assert tag in messages[0]["content"]  # what was stored stays


STATED = [
    pytest.param(Script(tokens=3, profile="vllm", context_tokens=2000), id="vllm"),
    pytest.param(Script(tokens=3, profile="llama-server", context_tokens=2000), id="llama-server"),
]


@pytest.mark.parametrize("upstream", STATED, indirect=True)
def test_a_stated_context_length_caps_the_budget_at_start(
    chatsvc: tuple[Server, User], upstream: FakeOpenAI
) -> None:
    server, user = chatsvc
    source = "max_model_len in /v1/models" if upstream.default.profile == "vllm" else "n_ctx"
    # 2000 tokens, a quarter kept for the reply: 1500 tokens (6000 characters) of history.
    assert "model fake-model: context 2000 tokens (" in server.log()
    assert source in server.log()
    assert "history budget 1500 tokens" in server.log()
    assert "  Context    2000 tokens (" in server.log()  # the start banner says it too

    chat_id = new_chat(user)
    fill_history(server, chat_id, messages=20, chars=1000)
    tag = marker()
    end = send(user, chat_id, tag)
    assert end["type"] == "done", end
    (record,) = upstream.records_for(tag)
    assert not record.overflowed
    assert 4000 < prompt_chars(record) <= 6000

    # Longer than the whole budget: refused before anything is stored or sent upstream.
    tag = marker()
    refused = send(user, chat_id, tag + " " + "y" * 7000)
    assert refused["type"] == "error"
    assert refused["code"] == "too_large"
    assert "shorten it" in refused["message"]
    with user.client() as client:
        answer = client.post(f"/api/chats/{chat_id}/messages", json={"content": "z" * 7000})
        assert answer.status_code == 413
        assert answer.json()["code"] == "too_large"
        stored = client.get(f"/api/chats/{chat_id}/messages", params={"limit": 100}).json()
    assert not any(tag in m["content"] for m in stored["items"])
    assert upstream.records_for(tag) == []


@pytest.mark.parametrize("upstream", STATED[:1], indirect=True)
def test_a_long_system_prompt_is_refused_before_the_upstream(
    chatsvc: tuple[Server, User], upstream: FakeOpenAI
) -> None:
    _, user = chatsvc
    with user.client() as client:
        chat_id = client.post("/api/chats", json={"system_prompt": "s" * 5000}).json()["id"]
    tag = marker()
    end = send(user, chat_id, tag + " " + "m" * 2000)
    assert end["type"] == "error", end
    assert end["code"] == "too_large"
    assert "system prompt" in end["message"]
    assert upstream.records_for(tag) == []
