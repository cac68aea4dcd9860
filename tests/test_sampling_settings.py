"""``LLM_TEMPERATURE`` and ``LLM_MAX_TOKENS`` (README, configuration): set, they go upstream
with every request of a reply; unset, neither is sent and the model server's defaults hold."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from tests.fake_openai import FakeOpenAI, Record, directive
from tests.support import Server, User, register_and_login, upstream_settings


def reply_request(user: User, fake: FakeOpenAI) -> Record:
    """Send one message over REST; the streamed upstream request it made."""
    mark = f"sampling-{secrets.token_hex(4)}"
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": mark}).json()
        sent = client.post(
            f"/api/chats/{chat['id']}/messages",
            json={"content": f"{mark} {directive(tokens=2)}"},
        )
    assert sent.status_code == 200, sent.text
    [request] = [r for r in fake.records if r.stream and mark in str(r.messages)]
    return request


def test_temperature_and_length_cap_go_upstream(
    spawn_server: Callable[..., Server], fake_llm: FakeOpenAI
) -> None:
    server = spawn_server(
        **upstream_settings(fake_llm), LLM_TEMPERATURE="0.25", LLM_MAX_TOKENS="321"
    )
    request = reply_request(register_and_login(server), fake_llm)
    assert request.body["temperature"] == 0.25
    assert request.body["max_tokens"] == 321


def test_unset_neither_is_sent(alice: User, fake_llm: FakeOpenAI) -> None:
    """The shared test server sets neither."""
    request = reply_request(alice, fake_llm)
    assert "temperature" not in request.body
    assert "max_tokens" not in request.body
