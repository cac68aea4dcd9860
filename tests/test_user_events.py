"""Chat events for every socket of the chat's owner (docs/protocol.md section 4.2).

`chat_created` and `chat_updated` reach every open socket of the chat's owner, also
one that follows no chat (a tab showing the chat list), never another user's; a
socket that also follows the chat gets each of them once. The model's title is in
tests/test_titles.py, across instances in tests/test_scale_out.py.

"Once" is checked without waiting: an event goes to every socket of an instance
in one synchronous step, before the request that caused it answers, so a `ping`
sent after that answer comes back behind every copy the socket was given.
"""

from __future__ import annotations

from typing import Any

from tests.fake_openai import directive
from tests.support import Server, Socket, register_and_login

Frame = dict[str, Any]


def up_to_pong(socket: Socket) -> list[Frame]:
    """Every frame the socket was given so far (a `ping` answered comes behind them)."""
    socket.send(action="ping")
    frames = socket.until(lambda f: f["type"] == "pong")
    return frames[:-1]


def of_kind(frames: list[Frame], kind: str) -> list[Frame]:
    return [f for f in frames if f["type"] == kind]


def follow(socket: Socket, chat_id: str) -> None:
    socket.send(action="subscribe", chat_id=chat_id)
    assert of_kind(up_to_pong(socket), "snapshot") == []  # nothing streams there


def test_a_socket_that_follows_no_chat_sees_a_chat_created_by_another(server: Server) -> None:
    user, other = register_and_login(server), register_and_login(server)
    with Socket(user) as tab, Socket(user) as idle, Socket(other) as stranger:
        tab.send(action="send_message", content=f"hello {directive(tokens=2)}", request_id="r1")
        started = tab.until(lambda f: f["type"] == "started")
        (created,) = of_kind(started, "chat_created")  # once, to the socket that sent it
        tab.until_end(started[-1]["task_id"])
        seen = up_to_pong(idle)
        assert [f["type"] for f in seen] == ["chat_created"], seen  # not the reply's events
        assert seen[0] == created
        assert up_to_pong(stranger) == []
        assert of_kind(up_to_pong(tab), "chat_created") == []

        # A chat made over REST: every socket of the user lists it.
        with user.client() as client:
            made = client.post("/api/chats", json={"title": "From REST"})
        assert made.status_code == 201, made.text
        for socket in (tab, idle):
            (told,) = of_kind(up_to_pong(socket), "chat_created")
            assert told["chat"] == made.json()
            assert told["request_id"] is None
        assert up_to_pong(stranger) == []


def test_chat_updated_reaches_every_socket_of_the_user_once(server: Server) -> None:
    """A rename (`PATCH`) and a branch switch (`PUT .../active`), to followers and the rest."""
    user, other = register_and_login(server), register_and_login(server)
    with Socket(user) as tab, Socket(user) as idle, Socket(user) as follower:
        tab.send(action="send_message", content=f"first {directive(tokens=1)}")
        started = tab.until(lambda f: f["type"] == "started")
        chat_id = started[-1]["chat_id"]
        first = tab.until_end(started[-1]["task_id"])[-1]["message"]
        follow(follower, chat_id)
        tab.send(action="regenerate", chat_id=chat_id, message_id=first["id"])
        again = tab.until(lambda f: f["type"] == "started")[-1]
        tab.until_end(again["task_id"])
        for socket in (idle, follower):
            up_to_pong(socket)  # what the regenerate sent them
        with Socket(other) as stranger:
            with user.client() as client:
                renamed = client.patch(f"/api/chats/{chat_id}", json={"title": "Renamed"})
                assert renamed.status_code == 200, renamed.text
                for socket in (tab, idle, follower):
                    seen = up_to_pong(socket)
                    assert [f["type"] for f in seen] == ["chat_updated"], seen
                    assert seen[0]["chat"] == renamed.json()
                switched = client.put(
                    f"/api/chats/{chat_id}/active", json={"message_id": first["id"]}
                )
                assert switched.status_code == 200, switched.text
                assert switched.json()["active_leaf_id"] == first["id"]
                for socket in (tab, idle, follower):
                    seen = up_to_pong(socket)
                    assert [f["type"] for f in seen] == ["chat_updated"], seen
                    assert seen[0]["chat"] == switched.json()
            assert up_to_pong(stranger) == []


def test_a_regenerate_tells_the_user_s_other_sockets_of_the_new_branch(server: Server) -> None:
    """They get `chat_updated`, not the reply: its events are for the chat's followers."""
    user = register_and_login(server)
    with Socket(user) as tab:
        tab.send(action="send_message", content=f"first {directive(tokens=1)}")
        started = tab.until(lambda f: f["type"] == "started")[-1]
        first = tab.until_end(started["task_id"])[-1]["message"]
        with Socket(user) as idle:
            tab.send(action="regenerate", chat_id=first["chat_id"], message_id=first["id"])
            frames = tab.until(lambda f: f["type"] == "started")
            assert [f["type"] for f in frames] == ["chat_updated", "started"], frames
            tab.until_end(frames[-1]["task_id"])
            seen = up_to_pong(idle)
            assert [f["type"] for f in seen] == ["chat_updated"], seen
            assert seen[0]["chat"]["active_leaf_id"] == frames[-1]["message_id"]
