"""API keys for services (issue 16, point 2): made, listed and revoked with a login token;
a key acts as its user on REST and ``/ws`` until it expires or is revoked, and a revoked
key's open sockets close at once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from chatsvc.logs import redact
from tests.fake_openai import Script, directive
from tests.support import AppServer, Server, Socket, User, register_and_login, run_chatsvc
from tests.test_revocation import closed, pair, still_open  # noqa: F401 (pair: a fixture)
from tests.test_terminal_client import client_environment

KEY_LENGTH = len("csk_") + 43  # secrets.token_urlsafe(32)


def make_key(user: User, **fields: Any) -> dict[str, Any]:
    with user.client() as client:
        response = client.post("/api/keys", json={"name": "service", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def as_key(user: User, key: str) -> User:
    """``user`` holding ``key`` instead of a login token (REST and ``/ws``)."""
    return User(user.id, user.username, user.password, key, user.server)


def listed(user: User) -> list[dict[str, Any]]:
    with user.client() as client:
        response = client.get("/api/keys")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def me_status(server: Server | AppServer, key: str) -> int:
    with server.client(key) as client:
        return client.get("/api/me").status_code


def revoke(user: User, key_id: str) -> httpx.Response:
    with user.client() as client:
        return client.delete(f"/api/keys/{key_id}")


def test_a_key_is_shown_once_and_listed_by_its_prefix(server: Server) -> None:
    user = register_and_login(server)
    made = make_key(user, name="nightly export")
    key = made["key"]
    assert key.startswith("csk_")
    assert len(key) == KEY_LENGTH
    assert made["prefix"] == key[:12]
    assert made["name"] == "nightly export"
    assert (made["last_used_at"], made["expires_at"]) == (None, None)

    [item] = listed(user)
    assert item == {k: v for k, v in made.items() if k != "key"}  # never the key again
    assert key not in str(listed(user))

    [row] = server.db.query("SELECT * FROM api_key WHERE id = ?", made["id"])
    assert row["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(row)  # only its hash and its prefix are stored

    assert revoke(user, made["id"]).status_code == 204
    assert listed(user) == []
    assert revoke(user, made["id"]).status_code == 404  # revoked already
    assert me_status(server, key) == 401


def test_a_key_acts_as_its_user_on_rest(server: Server) -> None:
    user = register_and_login(server)
    service = as_key(user, make_key(user)["key"])
    with service.client() as client:
        me = client.get("/api/me")
        assert {k: me.json()[k] for k in ("id", "username")} == {
            "id": user.id,
            "username": user.username,
        }
        chat = client.post("/api/chats", json={"title": "made by a service"})
        assert chat.status_code == 201, chat.text
    with user.client() as client:
        assert [c["id"] for c in client.get("/api/chats").json()["items"]] == [chat.json()["id"]]


def test_a_key_opens_the_websocket_by_header_or_query(server: Server) -> None:
    user = register_and_login(server)
    key = make_key(user)["key"]
    with Socket(as_key(user, key)) as socket:  # ?token=
        assert socket.ready["user_id"] == user.id
        still_open(socket)
    headers = {"Authorization": f"Bearer {key}"}
    with connect(server.ws_url, additional_headers=headers) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"


@pytest.mark.parametrize("bearer", ["csk_" + "A" * 43, "csk_", "csk_" + "x" * 5000])
def test_an_unknown_key_is_refused(server: Server, bearer: str) -> None:
    assert me_status(server, bearer) == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.ws_url}?token={bearer}").close()
    assert refused.value.response.status_code in (401, 403)


def test_revoking_a_key_closes_its_sockets_at_once_and_only_them(
    serve_app: Callable[..., AppServer],
) -> None:
    # The periodic re-check is far away: only the revocation itself can close the socket.
    app = serve_app(WS_RECHECK_SECONDS="300")
    user = register_and_login(app)
    doomed, kept = make_key(user), make_key(user)
    with (
        Socket(as_key(user, doomed["key"])) as revoked_socket,
        Socket(as_key(user, kept["key"])) as key_socket,
        Socket(user) as login_socket,
    ):
        still_open(revoked_socket)
        started = time.monotonic()
        assert revoke(user, doomed["id"]).status_code == 204
        assert closed(revoked_socket, timeout=5) == (4401, "API key revoked")
        assert time.monotonic() - started < 5
        still_open(key_socket)
        still_open(login_socket)
    assert me_status(app, doomed["key"]) == 401
    assert me_status(app, kept["key"]) == 200


def test_a_key_expires(server: Server) -> None:
    user = register_and_login(server)
    soon = make_key(user, expires_in=3)
    assert soon["expires_at"] is not None
    with Socket(as_key(user, soon["key"])) as socket:
        still_open(socket)
        assert closed(socket) == (4401, "API key expired")
    assert me_status(server, soon["key"]) == 401

    later = make_key(user, expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    assert me_status(server, later["key"]) == 200
    server.db.query(
        "UPDATE api_key SET expires_at = ? WHERE id = ?",
        datetime.now(UTC) - timedelta(seconds=1),
        later["id"],
    )
    assert me_status(server, later["key"]) == 401
    assert [item["id"] for item in listed(user)] == [later["id"], soon["id"]]  # still listed


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"expires_at": "2001-01-01T00:00:00Z"}, "future"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no time zone
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 60, "expires_at": "2999-01-01T00:00:00Z"}, "not both"),
        ({"name": ""}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "key": "csk_chosen"}, "key"),
    ],
)
def test_bad_key_requests_are_refused(
    server: Server, alice: User, fields: dict[str, Any], problem: str
) -> None:
    with alice.client() as client:
        response = client.post("/api/keys", json={"name": "service", **fields})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_message"
    assert problem in response.text


def test_another_users_key_cannot_be_revoked(server: Server) -> None:
    owner, other = register_and_login(server), register_and_login(server)
    made = make_key(owner)
    assert revoke(other, made["id"]).status_code == 404
    assert revoke(other, "00000000-0000-4000-8000-000000000000").status_code == 404
    assert listed(other) == []
    assert me_status(server, made["key"]) == 200


def test_keys_are_managed_with_a_login_token_only(server: Server) -> None:
    user = register_and_login(server)
    made = make_key(user)
    with server.client(made["key"]) as client:
        for response in (
            client.post("/api/keys", json={"name": "minted by a leaked key"}),
            client.get("/api/keys"),
            client.delete(f"/api/keys/{made['id']}"),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "forbidden"
    assert [item["id"] for item in listed(user)] == [made["id"]]


def test_a_key_can_neither_end_sessions_nor_change_the_password(server: Server) -> None:
    """A leaked key must not lock its user out: both routes need a login token."""
    user = register_and_login(server)
    key = make_key(user)["key"]
    with server.client(key) as client:
        for response in (
            client.post("/api/auth/logout-all"),
            client.post(
                "/api/me/password",
                json={"current_password": user.password, "new_password": "n3w-Passw0rd-long"},
            ),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "forbidden"
    with user.client() as client:  # the login token still works: nothing was ended
        assert client.get("/api/me").status_code == 200
    assert me_status(server, key) == 200


def test_a_deactivated_users_keys_are_refused_and_their_sockets_closed(server: Server) -> None:
    user = register_and_login(server)
    key = make_key(user)["key"]
    with Socket(as_key(user, key)) as socket:
        still_open(socket)
        server.db.query("UPDATE piccolo_user SET active = ? WHERE id = ?", False, user.id)
        assert closed(socket) == (4401, "user deactivated")
    assert me_status(server, key) == 401


def test_revoking_login_tokens_leaves_keys_alone(server: Server) -> None:
    """A raised token version (password change, log out everywhere) ends login tokens only."""
    user = register_and_login(server)
    key = make_key(user)["key"]
    with Socket(as_key(user, key)) as socket:
        server.db.query("INSERT INTO token_version (account, version) VALUES (?, 5)", user.id)
        with user.client() as client:
            assert client.get("/api/me").status_code == 401
        assert me_status(server, key) == 200
        still_open(socket)


def test_a_revoked_key_is_refused_when_written_to_the_table(server: Server) -> None:
    """An operator's direct write reaches open sockets at the next re-check round."""
    user = register_and_login(server)
    made = make_key(user)
    with Socket(as_key(user, made["key"])) as socket:
        still_open(socket)
        server.db.query(
            "UPDATE api_key SET revoked_at = ? WHERE id = ?", datetime.now(UTC), made["id"]
        )
        assert me_status(server, made["key"]) == 401
        assert closed(socket) == (4401, "API key revoked")


def test_last_use_is_noted_at_most_once_a_minute(server: Server) -> None:
    user = register_and_login(server)
    made = make_key(user)
    assert me_status(server, made["key"]) == 200
    [item] = listed(user)
    first = item["last_used_at"]
    assert first is not None
    assert me_status(server, made["key"]) == 200
    assert listed(user)[0]["last_used_at"] == first  # within the minute: not written again

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    server.db.query("UPDATE api_key SET last_used_at = ? WHERE id = ?", an_hour_ago, made["id"])
    assert me_status(server, made["key"]) == 200
    noted = datetime.fromisoformat(listed(user)[0]["last_used_at"])
    assert noted > an_hour_ago + timedelta(minutes=59)


def test_a_user_keeps_at_most_a_hundred_keys(serve_app: Callable[..., AppServer]) -> None:
    app = serve_app(RATE_LIMIT_PER_MINUTE="1000")
    user = register_and_login(app)
    made = [make_key(user, name=f"key {n}") for n in range(100)]
    with user.client() as client:
        refused = client.post("/api/keys", json={"name": "one too many"})
        assert refused.status_code == 409
        assert refused.json()["code"] == "limit_reached"
        assert revoke(user, made[0]["id"]).status_code == 204
        assert client.post("/api/keys", json={"name": "in its place"}).status_code == 201


def test_keys_are_audited_and_never_logged(server: Server) -> None:
    user = register_and_login(server)
    made = make_key(user)
    with server.client() as client:
        client.get("/api/me", headers={"Authorization": f"Bearer {made['key']}x"})
        client.get(f"/api/me?token={made['key']}")
    assert revoke(user, made["id"]).status_code == 204
    lines = [line for line in server.log().splitlines() if made["id"] in line]
    assert any("event=api_key_created" in line for line in lines), lines
    assert any("event=api_key_revoked" in line and "by=owner" in line for line in lines), lines
    assert made["key"] not in server.log()


def test_revoking_a_key_on_one_instance_closes_its_socket_on_another(
    pair: tuple[Server, Server],  # noqa: F811 (the fixture imported above)
) -> None:
    a, b = pair  # their own re-check rounds are 300 s apart: only the bus can be in time
    user = register_and_login(a)
    made = make_key(user)
    on_b = User(user.id, user.username, user.password, made["key"], b)
    with Socket(on_b) as socket:
        still_open(socket)
        assert revoke(user, made["id"]).status_code == 204
        assert closed(socket, timeout=5) == (4401, "API key revoked")
    assert me_status(b, made["key"]) == 401


def test_the_terminal_client_runs_on_a_key(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    key = make_key(user, name="terminal")["key"]
    env = client_environment(CHATSVC_TOKEN=key)
    script = f"hi {directive(tokens=3)}\n"
    piped = run_chatsvc("chat", "--url", server.url, cwd=tmp_path, env=env, stdin=script)
    assert piped.returncode == 0, piped.stderr
    assert "assistant: " + Script(tokens=3).expected_text() in piped.stdout
    assert key not in piped.stdout + piped.stderr


def test_a_whole_key_is_redacted_from_log_lines_and_its_prefix_kept() -> None:
    key = "csk_" + "Ab3_-x" * 7 + "Q"
    line = redact(f"GET /api/me authorization={key} prefix={key[:12]}")
    assert key not in line
    assert "[redacted]" in line
    assert line.endswith(f"prefix={key[:12]}")


def test_the_openapi_schema_documents_keys(server: Server) -> None:
    with server.client() as client:
        schema = client.get("/schema/openapi.json").json()
    [scheme] = schema["components"]["securitySchemes"].values()
    assert "csk_" in scheme["description"]
    operations = {
        operation["operationId"]: operation
        for path, item in schema["paths"].items()
        if path.startswith("/api/keys")
        for operation in item.values()
    }
    assert set(operations) == {"createApiKey", "listApiKeys", "revokeApiKey"}
    for operation in operations.values():
        assert operation["tags"] == ["keys"]
        assert {"401", "403"} <= set(operation["responses"])
    assert "409" in operations["createApiKey"]["responses"]
    assert "404" in operations["revokeApiKey"]["responses"]
    created = schema["components"]["schemas"]["NewApiKey"]["properties"]
    listed = schema["components"]["schemas"]["ApiKey"]["properties"]
    assert "key" in created
    assert "key" not in listed
    assert "hash" not in listed
