"""``/set`` in the terminal client (issue 16 point 3): the open chat's generation settings
shown and changed with ``PATCH``, in a real pseudo-terminal against a real server; the next
reply goes upstream with them (the fake upstream records the request)."""

from __future__ import annotations

from pathlib import Path

from tests.fake_openai import FakeOpenAI, directive
from tests.support import OTHER_MODEL, Server, register_and_login
from tests.test_terminal_client import (
    PROMPT,
    ends_with_status,
    make_chat,
    marker,
    open_chat,
    spawn_client,
)


def test_set_shows_and_changes_the_chats_settings(
    server: Server, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    user = register_and_login(server)
    chat_id = make_chat(user, "Tuned", f"{marker()} {directive(tokens=2)}")
    child = open_chat(tmp_path, user, chat_id)

    child.sendline("/set")
    child.expect_exact("This chat's settings (default: the server's):")
    child.expect(r"temperature\s+default")
    child.expect_exact(PROMPT)
    for line in (
        "/set temperature 0.3",
        "/set max_tokens 64",
        f"/set model {OTHER_MODEL}",
        "/set system Answer  in one line.",
    ):
        child.sendline(line)
        child.expect_exact("Saved; the next reply uses them:")
        child.expect_exact(PROMPT)
    # Refused here (out of the wire's bounds) or by the server (over its limit): one line,
    # nothing changed, the session goes on.
    child.sendline("/set temperature 2.5")
    child.expect_exact("! temperature: Expected `float` <= 2.0")
    child.sendline("/set max_tokens 40000")
    child.expect_exact("LLM_MAX_TOKENS_LIMIT")
    child.expect_exact("(HTTP 422)")
    child.sendline("/set top_p hot")
    child.expect_exact("! top_p: a number, or default")
    child.expect_exact(PROMPT)
    with user.client() as client:
        chat = client.get(f"/api/chats/{chat_id}").json()
    assert (chat["temperature"], chat["max_tokens"], chat["model"]) == (0.3, 64, OTHER_MODEL)
    assert chat["system_prompt"] == "Answer  in one line."
    assert chat["top_p"] is None

    mark = marker()
    child.sendline(f"{mark} {directive(tokens=2)}")
    child.expect_exact(PROMPT)
    [request] = [r for r in fake_llm.records if r.stream and mark in r.last_user_message]
    assert request.model == OTHER_MODEL
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.3, 64)
    assert request.messages[0]["content"].startswith("Answer  in one line.")

    child.sendline("/set temperature default")
    child.expect(r"temperature\s+default")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    ends_with_status(child, 0)
    with user.client() as client:
        assert client.get(f"/api/chats/{chat_id}").json()["temperature"] is None


def test_set_on_a_chat_not_created_yet(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, CHATSVC_TOKEN=user.token)
    child.expect_exact(PROMPT)
    child.sendline("/set temperature 0.5")
    child.expect_exact("! this chat is created with your next message")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    ends_with_status(child, 0)
