"""Moves the tree tools refuse (chatsvc/tree.py, docs/protocol.md section 5), driven by the
echo provider's `/tree` commands: the root does not move, and no node moves under itself.
The reply says why in its words; the tree and its version stay as they were."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support import Server, Socket, register_and_login


def test_the_root_and_a_move_under_itself_are_refused(
    spawn_server: Callable[..., Server],
) -> None:
    server = spawn_server(ECHO_TOKEN_DELAY="0")
    user = register_and_login(server)
    with Socket(user) as socket:

        def say(content: str, chat_id: str | None = None) -> list[dict[str, Any]]:
            fields = {"chat_id": chat_id} if chat_id else {}
            started = socket.start(content, **fields)
            frames = socket.until_end(started["task_id"])
            assert frames[-1]["type"] == "done", frames[-1]
            return frames

        first = say("/tree add root outer")[-1]
        chat_id = first["chat_id"]
        outer = first["message"]["tool_calls"][0]["result"]["id"]
        inner = say(f"/tree add {outer} inner", chat_id)[-1]["message"]["tool_calls"][0]
        inner_id = inner["result"]["id"]
        with user.client() as client:
            before = client.get(f"/api/chats/{chat_id}/tree").json()
        assert before["version"] == 2

        refusals = {
            f"/tree move root {outer}": "the root cannot be moved",
            f"/tree move {outer} {inner_id}": "a node cannot move under itself",
            f"/tree move {outer} {outer}": "a node cannot move under itself",
        }
        for command, why in refusals.items():
            frames = say(command, chat_id)
            assert "tree_update" not in [f["type"] for f in frames], command
            assert frames[-1]["message"]["content"] == (
                f"Not done: the node could not be moved: {why}."
            )
    with user.client() as client:
        assert client.get(f"/api/chats/{chat_id}/tree").json() == before
