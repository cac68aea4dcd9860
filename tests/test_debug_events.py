"""``debug`` events (docs/protocol.md section 5): a reply's timings and counts, sent just
before its terminal event, only to sockets that subscribed to the chat with
``"debug": true``, and only in development or to staff users. Otherwise such a
``subscribe`` is a plain one. SSE streams never get them.

Real servers (echo provider) in the ``test``, ``development`` and ``production``
environments, on both engines.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import (
    PASSWORD,
    TERMINAL,
    AppServer,
    Database,
    Server,
    Socket,
    User,
    create_account,
    register_and_login,
    start_app_server,
)

DEBUG_FIELDS = {
    "status",
    "duration_ms",
    "upstream_first_token_ms",
    "tokens",
    "rounds",
    "tool_rounds",
    "tool_calls",
    "cancel_latency_ms",
}


@pytest.fixture(scope="module")
def servers(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, AppServer]]:
    """One echo-provider server per environment."""
    started: dict[str, AppServer] = {}
    try:
        for environment in ("test", "development", "production"):
            started[environment] = start_app_server(
                make_database(engine, migrated=True),
                tmp_path_factory.mktemp(f"debug-{environment}"),
                ENVIRONMENT=environment,
                JWT_SECRET=secrets.token_urlsafe(48),
                ECHO_TOKEN_DELAY="0.01",
            )
        yield started
    finally:
        for server in started.values():
            server.stop()


def staff_user(server: Server) -> User:
    """A staff user made as ``chatsvc createuser --staff`` makes one, logged in."""
    username = create_account(server.db, "--staff")
    with server.client() as client:
        login = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
        me = client.get(
            "/api/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
        )
    return User(me.json()["id"], username, PASSWORD, login.json()["access_token"], server)


def new_chat(user: User) -> str:
    with user.client() as client:
        response = client.post("/api/chats", json={"title": "debug"})
        assert response.status_code == 201, response.text
        return response.json()["id"]


def subscribe(socket: Socket, chat_id: str, **fields: Any) -> None:
    """Subscribe, and know the server handled it without a word (frames go in order)."""
    socket.send(action="subscribe", chat_id=chat_id, **fields)
    socket.send(action="ping")
    assert socket.recv() == {"type": "pong"}  # no `error`, no `snapshot`


def quiet(socket: Socket) -> None:
    """Nothing more is waiting for this socket (a ping's answer comes next)."""
    socket.send(action="ping")
    assert socket.recv() == {"type": "pong"}


def reply(writer: Socket, chat_id: str, text: str = "hello debug") -> list[dict[str, Any]]:
    started = writer.start(text, chat_id=chat_id)
    return [started, *writer.until_end(started["task_id"])]


def debug_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "debug"]


def assert_debug_before_the_end(frames: list[dict[str, Any]], task_id: str, chat_id: str) -> dict:
    """One ``debug`` for the task, right before its terminal event; its ``data``."""
    (debug,) = debug_events(frames)
    assert frames[-1]["type"] in TERMINAL
    assert frames[-2] is debug
    assert debug["task_id"] == task_id
    assert debug["chat_id"] == chat_id
    assert set(debug) == {"type", "chat_id", "task_id", "data"}
    assert set(debug["data"]) >= DEBUG_FIELDS
    return debug["data"]


def test_staff_get_debug_events_of_the_chats_they_asked_for(servers: dict[str, AppServer]) -> None:
    server = servers["test"]
    staff = staff_user(server)
    chat_id, other_chat = new_chat(staff), new_chat(staff)
    with Socket(staff) as watcher, Socket(staff) as writer:
        subscribe(watcher, chat_id, debug=True)
        subscribe(watcher, other_chat)  # no debug asked for this one
        written = reply(writer, chat_id)
        task_id = written[0]["task_id"]
        watched = watcher.until_end(task_id)
        # The writer follows the chat since it sent the message, but never asked for debug.
        assert debug_events(written) == []
        data = assert_debug_before_the_end(watched, task_id, chat_id)
        assert watched[-1] == written[-1]
        assert data["status"] == "complete"
        assert data["tokens"] == len([f for f in written if f["type"] == "token"])
        assert data["rounds"] == 1
        assert data["tool_rounds"] == data["tool_calls"] == 0
        assert data["duration_ms"] > 0
        assert data["upstream_first_token_ms"] is not None
        assert data["cancel_latency_ms"] is None

        other = reply(writer, other_chat)
        watched_other = watcher.until_end(other[0]["task_id"])
        assert debug_events(watched_other) == []  # followed, but without debug
        quiet(watcher)


def test_the_writer_gets_debug_when_it_subscribed_with_it(servers: dict[str, AppServer]) -> None:
    staff = staff_user(servers["test"])
    chat_id = new_chat(staff)
    with Socket(staff) as socket:
        subscribe(socket, chat_id, debug=True)
        frames = reply(socket, chat_id)  # sending keeps the debug subscription
        assert_debug_before_the_end(frames, frames[0]["task_id"], chat_id)

        subscribe(socket, chat_id)  # subscribing again without debug turns it off
        assert debug_events(reply(socket, chat_id)) == []

        subscribe(socket, chat_id, debug=True)
        socket.send(action="unsubscribe", chat_id=chat_id)
        quiet(socket)
        frames = reply(socket, chat_id)  # the send subscribes again: without debug
        assert debug_events(frames) == []
        quiet(socket)


@pytest.mark.parametrize("environment", ["test", "production"])
def test_outside_development_only_staff_get_them(
    servers: dict[str, AppServer], environment: str
) -> None:
    server = servers[environment]
    user, staff = register_and_login(server), staff_user(server)
    chat_id = new_chat(user)
    staff_chat = new_chat(staff)
    with Socket(user) as watcher, Socket(user) as writer, Socket(staff) as staff_socket:
        subscribe(watcher, chat_id, debug=True)  # accepted as a plain subscribe: no error
        frames = reply(writer, chat_id)
        watched = watcher.until_end(frames[0]["task_id"])
        assert debug_events(watched) == []
        assert debug_events(frames) == []
        assert watched[-1] == frames[-1]
        quiet(watcher)

        subscribe(staff_socket, staff_chat, debug=True)
        staff_frames = reply(staff_socket, staff_chat)
        assert_debug_before_the_end(staff_frames, staff_frames[0]["task_id"], staff_chat)


def test_in_development_every_user_who_asks_gets_them(servers: dict[str, AppServer]) -> None:
    user = register_and_login(servers["development"])
    chat_id = new_chat(user)
    with Socket(user) as asking, Socket(user) as not_asking:
        subscribe(asking, chat_id, debug=True)
        subscribe(not_asking, chat_id)
        written = reply(asking, chat_id)
        assert_debug_before_the_end(written, written[0]["task_id"], chat_id)
        followed = not_asking.until_end(written[0]["task_id"])
        assert debug_events(followed) == []


def test_an_aborted_reply_reports_its_cancel_latency(servers: dict[str, AppServer]) -> None:
    user = register_and_login(servers["development"])
    chat_id = new_chat(user)
    with Socket(user) as socket:
        subscribe(socket, chat_id, debug=True)
        started = socket.start(" ".join(["word"] * 2000), chat_id=chat_id)
        socket.until(lambda f: f["type"] == "token" and f["seq"] >= 3)
        socket.send(action="abort", task_id=started["task_id"])
        frames = socket.until_end(started["task_id"])
    assert frames[-1]["type"] == "aborted"
    data = assert_debug_before_the_end(frames, started["task_id"], chat_id)
    assert data["status"] == "aborted"
    assert data["cancel_latency_ms"] is not None
    assert data["cancel_latency_ms"] >= 0


def test_sse_streams_never_get_them(servers: dict[str, AppServer]) -> None:
    user = register_and_login(servers["development"])
    chat_id = new_chat(user)
    with Socket(user) as watcher:
        subscribe(watcher, chat_id, debug=True)
        with (
            user.client() as client,
            client.stream(
                "POST",
                f"/api/chats/{chat_id}/messages",
                json={"content": "/tree add root over sse"},  # a tool call: a tree_update
                headers={"Accept": "text/event-stream"},
            ) as response,
        ):
            assert response.status_code == 200
            kinds = [
                line.removeprefix("event:").strip()
                for line in response.iter_lines()
                if line.startswith("event:")
            ]
        assert kinds[-1] == "done"
        assert "tree_update" in kinds  # the stream gets the chat's other events
        assert "debug" not in kinds
        watched = watcher.until(lambda f: f["type"] in TERMINAL)
        (debug,) = debug_events(watched)  # it was published: the socket that asked got it
        assert watched[-2] == debug


def test_a_debug_subscribe_of_another_users_chat_is_not_found(
    servers: dict[str, AppServer],
) -> None:
    server = servers["development"]
    owner, other = register_and_login(server), register_and_login(server)
    chat_id = new_chat(owner)
    with Socket(other) as socket:
        socket.send(action="subscribe", chat_id=chat_id, debug=True)
        refused = socket.recv()
        with Socket(owner) as writer:
            reply(writer, chat_id)
        quiet(socket)  # neither the reply nor its debug came
    assert refused["type"] == "error"
    assert refused["code"] == "not_found"


def test_debug_must_be_a_boolean(servers: dict[str, AppServer]) -> None:
    user = register_and_login(servers["development"])
    chat_id = new_chat(user)
    with Socket(user) as socket:
        socket.send_raw(json.dumps({"action": "subscribe", "chat_id": chat_id, "debug": "yes"}))
        refused = socket.recv()
    assert refused["type"] == "error"
    assert refused["code"] == "invalid_message"
