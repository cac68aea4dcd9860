"""Health checks, OpenAPI and documentation pages, and logins that never stall the loop."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import httpx

from tests.support import PASSWORD, Server, User, register_and_login
from tests.support.http import tls


def test_health_and_readiness(server: Server) -> None:
    with server.client() as client:
        health = client.get("/health")
        ready = client.get("/health/ready")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "database": "ok",
        "event_bus": "none",
        "llm": "closed",
    }


def test_openapi_schema_names_the_types_well(server: Server) -> None:
    with server.client() as client:
        schema = client.get("/schema/openapi.json").json()
    names = set(schema["components"]["schemas"])
    for expected in (
        "Chat",
        "ChatCreate",
        "ChatUpdate",
        "ChatPage",
        "ChatWithMessages",
        "Message",
        "MessagePage",
        "Usage",
        "User",
        "RegisterRequest",
        "AccessToken",
    ):
        assert expected in names, sorted(names)
    assert not any("_" in name or "." in name for name in names), sorted(names)
    paths = schema["paths"]
    for path in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/me",
        "/api/chats",
        "/api/chats/{chat_id}",
        "/api/chats/{chat_id}/messages",
        "/api/users/{user_id}/chats",
        "/health",
        "/health/ready",
    ):
        assert path in paths, sorted(paths)
    login_body = paths["/api/auth/login"]["post"]["requestBody"]["content"]
    assert set(login_body) == {"application/json", "application/x-www-form-urlencoded"}
    register = schema["components"]["schemas"]["RegisterRequest"]["properties"]
    assert register["username"]["maxLength"] == 64
    assert register["password"]["minLength"] == 8


def test_docs_pages(server: Server) -> None:
    with server.client() as client:
        for path, marker in (("/docs", "swagger"), ("/redoc", "redoc")):
            response = client.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert marker in response.text.lower()


def test_unknown_route_is_a_json_404(alice: User) -> None:
    with alice.client() as client:
        response = client.get("/api/nothing-here")
        wrong_method = client.put("/api/chats")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "invalid_message"


def test_health_answers_promptly_while_ten_logins_hash(
    spawn_server: Callable[..., Server],
) -> None:
    """PBKDF2 runs in worker threads: the event loop keeps serving during a login burst."""
    # Production's rounds (unset: the default), where a hash takes long enough to measure.
    server = spawn_server(PASSWORD_HASH_ROUNDS="")
    alice = register_and_login(server)
    statuses: list[int] = []

    def log_in() -> None:
        response = httpx.post(
            f"{server.url}/api/auth/login",
            json={"username": alice.username, "password": PASSWORD},
            timeout=120,
            verify=tls(),
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=log_in) for _ in range(10)]
    latencies: list[float] = []
    with server.client() as client:
        client.get("/health")  # warm the connection
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # let the hashing start
        while any(t.is_alive() for t in threads):
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert statuses == [200] * 10
    assert len(latencies) >= 5, "the logins finished before /health was measured"
    # A loop blocked by the hashing would answer after the hash in progress (~0.5 s each),
    # nearly every time. One that is not answers at once, but on two cores shared with ten
    # hashing threads (and, in the suite, other workers) an answer can still wait for a
    # core now and then (2.04 s once, on a slow machine): the typical answers are what tell
    # the two apart, not the slowest one.
    assert statistics.median(latencies) < 0.1, sorted(latencies)
    prompt = [latency for latency in latencies if latency < 0.25]
    assert len(prompt) >= 0.75 * len(latencies), sorted(latencies)
