"""Rate limits, login throttling, socket limits and CORS, on a server with low limits."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    PASSWORD,
    Server,
    Socket,
    User,
    register_and_login,
    upstream_settings,
)
from tests.support.http import tls

ORIGIN = "https://app.example"


def test_limits(serve_app, fake_llm: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    server: Server = serve_app(
        **upstream_settings(fake_llm),
        RATE_LIMIT_PER_MINUTE="8",
        LOGIN_ATTEMPTS_PER_MINUTE="6",
        WS_FRAMES_PER_SECOND="5",
        MAX_SOCKETS_PER_USER="2",
        CORS_ORIGINS=ORIGIN,
    )
    alice = register_and_login(server)  # 2 login attempts
    bob = register_and_login(server)  # 4

    # Login throttling: per client address, correct password or not.
    with server.client() as client:
        attempts = [
            client.post(
                "/api/auth/login", json={"username": alice.username, "password": "wrong-pw"}
            )
            for _ in range(3)
        ]
    assert [a.status_code for a in attempts] == [401, 401, 429]
    throttled = attempts[-1]
    assert throttled.json()["code"] == "rate_limited"
    assert int(throttled.headers["Retry-After"]) >= 1
    with server.client() as client:
        correct = client.post(
            "/api/auth/login", json={"username": bob.username, "password": PASSWORD}
        )
    assert correct.status_code == 429

    # REST: per user, so one user's burst leaves the other alone.
    with alice.client() as client:
        statuses = [client.get("/api/chats").status_code for _ in range(10)]
        limited = client.get("/api/chats")
    assert statuses[:8] == [200] * 8
    assert set(statuses[8:]) == {429}
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert "Retry-After" in limited.headers
    with bob.client() as client:
        assert client.get("/api/chats").status_code == 200
    assert httpx.get(f"{server.url}/health", verify=tls()).status_code == 200  # never limited

    # WebSocket frames: bursts are cut, the socket stays.
    with Socket(bob) as socket:
        for _ in range(30):
            socket.send(action="ping")
        answers = [socket.recv() for _ in range(30)]
        kinds = {a["type"] for a in answers}
        assert kinds == {"pong", "error"}
        assert {a["code"] for a in answers if a["type"] == "error"} == {"rate_limited"}
        time.sleep(1.0)
        socket.send(action="ping")
        assert socket.recv() == {"type": "pong"}

    # CORS: the configured origin only.
    with server.client() as client:
        allowed = client.options(
            "/api/chats",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        other = client.options(
            "/api/chats",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    assert "access-control-allow-origin" not in other.headers


def test_too_many_sockets_get_an_error_then_1008(serve_app) -> None:  # type: ignore[no-untyped-def]
    server: Server = serve_app(MAX_SOCKETS_PER_USER="1")
    user = register_and_login(server)
    with Socket(user):
        from websockets.sync.client import connect

        with connect(f"{server.ws_url}?token={user.token}") as extra:
            error = json.loads(extra.recv(timeout=10))
            with pytest.raises(ConnectionClosed) as closed:
                extra.recv(timeout=10)
    assert error["type"] == "error"
    assert error["code"] == "rate_limited"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def test_cors_is_closed_by_default(server: Server) -> None:
    with server.client() as client:
        preflight = client.options(
            "/api/chats", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        simple = client.get("/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


def test_the_per_user_reply_cap_says_when_to_retry(fresh_user: User) -> None:
    """At `MAX_CONCURRENT_GENERATIONS` running replies, one more send is `429` with
    `Retry-After` over REST (waiting and SSE), and `retry_after` over the WebSocket."""
    slow = directive(tokens=400, rate=40)
    with Socket(fresh_user) as socket:
        cap = socket.ready["limits"]["max_concurrent_generations"]
        running = [socket.start(f"keep busy {i} {slow}") for i in range(cap)]
        with fresh_user.client() as client:
            chat_id = client.post("/api/chats", json={}).json()["id"]
            path = f"/api/chats/{chat_id}/messages"
            waiting = client.post(path, json={"content": "one more"})
            streaming = client.post(
                path, json={"content": "one more"}, headers={"Accept": "text/event-stream"}
            )
        socket.send(action="send_message", content="one more", request_id="over")
        refused = socket.until(lambda f: f.get("request_id") == "over")[-1]
        for started in running:
            socket.send(action="abort", task_id=started["task_id"])
            assert socket.until_end(started["task_id"])[-1]["type"] == "aborted"
    for answer in (waiting, streaming):
        assert answer.status_code == 429, answer.text
        assert answer.json()["code"] == "rate_limited"
        assert int(answer.headers["Retry-After"]) >= 1
    assert refused["type"] == "error"
    assert refused["code"] == "rate_limited"
    assert refused["retry_after"] >= 1
