"""What one user may keep (issue 12, point 11): at most ``MAX_CHATS_PER_USER`` chats."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.fake_openai import FakeOpenAI, directive
from tests.support import Server, Socket, User, register_and_login, upstream_settings

CAP = 3


def chat_count(user: User) -> int:
    with user.client() as client:
        return len(client.get("/api/chats", params={"limit": 200}).json()["items"])


def test_a_user_keeps_at_most_max_chats_per_user_chats(
    serve_app: Any, fake_llm: FakeOpenAI
) -> None:
    server: Server = serve_app(**upstream_settings(fake_llm), MAX_CHATS_PER_USER=str(CAP))
    user, other = register_and_login(server), register_and_login(server)
    with user.client() as client:
        ids = [client.post("/api/chats", json={"title": f"c{i}"}).json()["id"] for i in range(CAP)]
        refused = client.post("/api/chats", json={"title": "one too many"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "limit_reached"
        assert "3 chats" in refused.json()["detail"]
        assert chat_count(user) == CAP

        # A message without chat_id would create a chat: refused the same way, nothing stored.
        with Socket(user) as socket:
            socket.send(action="send_message", content="new chat please", request_id="r1")
            frames = socket.until(lambda f: f["type"] == "error")
            assert frames[-1]["code"] == "limit_reached", frames
            assert frames[-1]["request_id"] == "r1"
            # The chats the user has still take messages.
            socket.send(action="send_message", content=directive(tokens=2), chat_id=ids[0])
            assert socket.until(lambda f: f["type"] in ("done", "error"))[-1]["type"] == "done"
        assert chat_count(user) == CAP

        # Another user's count is their own; deleting a chat makes room again.
        with other.client() as other_client:
            assert other_client.post("/api/chats", json={}).status_code == 201
        assert client.delete(f"/api/chats/{ids[1]}").status_code == 204
        assert client.post("/api/chats", json={"title": "room again"}).status_code == 201
        assert client.post("/api/chats", json={}).status_code == 409


def test_concurrent_creates_do_not_pass_the_cap_together(
    serve_app: Any, fake_llm: FakeOpenAI
) -> None:
    server: Server = serve_app(**upstream_settings(fake_llm), MAX_CHATS_PER_USER=str(CAP))
    user = register_and_login(server)

    def create_over_rest(_: int) -> int:
        with user.client() as client:
            return client.post("/api/chats", json={}).status_code

    def create_over_ws(i: int) -> str:
        with Socket(user) as socket:
            mine = f"create-{i}"
            socket.send(
                action="send_message",
                content=f"hello {i} {directive(tokens=1)}",
                request_id=mine,
            )
            # Every socket of the user hears of every chat made (docs/protocol.md): only
            # this socket's own chat_created, or its error, says how its send went.
            return socket.until(
                lambda f: f.get("request_id") == mine and f["type"] in ("chat_created", "error")
            )[-1]["type"]

    with ThreadPoolExecutor(12) as pool:
        rest = pool.map(create_over_rest, range(6))
        ws = pool.map(create_over_ws, range(6))
        outcomes = [*rest, *ws]
    created = [o for o in outcomes if o in (201, "chat_created")]
    assert len(created) == CAP, outcomes
    assert chat_count(user) == CAP
