"""The workspace tree in the model's prompt (docs/protocol.md section 5) when it would take
more than half of the context: a short note stands in for it, so the conversation still
fits and the model knows to ask which nodes to change."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from tests.fake_openai import FakeOpenAI, directive
from tests.support import Server, register_and_login, upstream_settings

NOTE = "(too large to show here; ask the user which nodes to change)"


def test_a_tree_too_large_for_the_context_is_not_shown(
    spawn_server: Callable[..., Server], fake_llm: FakeOpenAI
) -> None:
    server = spawn_server(**upstream_settings(fake_llm), CONTEXT_BUDGET_TOKENS="100")
    user = register_and_login(server)
    long_value = "long " * 200
    mark = f"tree-prompt-{secrets.token_hex(4)}"
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": mark}).json()
        node = {"id": "big", "value": long_value, "children": []}
        patched = client.patch(
            f"/api/chats/{chat['id']}/tree",
            json={"version": 0, "ops": [{"op": "add", "path": "/root/children/-", "value": node}]},
        )
        assert patched.status_code == 200, patched.text
        sent = client.post(
            f"/api/chats/{chat['id']}/messages", json={"content": f"{mark} {directive(tokens=2)}"}
        )
    assert sent.status_code == 200, sent.text
    assert sent.json()["message"]["status"] == "complete", sent.json()
    [record] = fake_llm.records_for(mark)
    system = record.messages[0]
    assert system["role"] == "system"
    assert NOTE in system["content"]
    assert long_value not in system["content"]
    assert record.messages[-1]["content"].startswith(mark)  # the question itself went
