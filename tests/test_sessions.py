"""Sessions that last and can be ended (issue 16, point 1; docs/protocol.md section 1).

Login returns a short-lived access token and a refresh token; each refresh token is
exchanged once for the next pair (rotation), and one presented again ends its whole
session, with an audit line. Logout ends one session, logout-all every session and
every open socket, and a password change every session but the caller's.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

from tests.support import (
    JWT_SECRET,
    PASSWORD,
    Server,
    Socket,
    User,
    register_and_login,
)
from tests.test_audit import audit_lines
from tests.test_revocation import closed, still_open

NEW_PASSWORD = "a brand new passphrase"


def log_in(user: User, password: str = PASSWORD) -> dict[str, Any]:
    """A new session of ``user``: the login's answer."""
    with user.server.client() as client:
        response = client.post(
            "/api/auth/login", json={"username": user.username, "password": password}
        )
    assert response.status_code == 200, response.text
    return response.json()


def refresh(server: Server, refresh_token: str) -> httpx.Response:
    with server.client() as client:
        return client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


def me(server: Server, access_token: str) -> int:
    with server.client(access_token) as client:
        return client.get("/api/me").status_code


def session_of(access_token: str) -> str:
    """The session an access token names (Litestar keeps our claims under ``extras``)."""
    claims = jwt.decode(access_token, JWT_SECRET, algorithms=["HS256"])
    return claims["extras"]["sid"]


def as_user(user: User, pair: dict[str, Any]) -> User:
    return User(user.id, user.username, user.password, pair["access_token"], user.server)


def test_refresh_rotates_the_pair(server: Server) -> None:
    user = register_and_login(server)
    first = log_in(user)
    sid = session_of(first["access_token"])
    assert sid  # the session the access token belongs to

    answer = refresh(server, first["refresh_token"])
    assert answer.status_code == 200, answer.text
    second = answer.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert session_of(second["access_token"]) == sid
    assert me(server, second["access_token"]) == 200

    third = refresh(server, second["refresh_token"])
    assert third.status_code == 200, third.text
    assert me(server, third.json()["access_token"]) == 200


def test_refresh_tokens_are_stored_as_hashes_only(server: Server) -> None:
    user = register_and_login(server)
    pair = log_in(user)
    token = pair["refresh_token"]
    assert len(token) >= 43  # 256 bits, URL-safe base64
    rows = server.db.query(
        "SELECT token_hash, used_at, revoked_at, expires_at FROM refresh_token WHERE account = ?",
        user.id,
    )
    hashes = [row["token_hash"] for row in rows]
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes
    assert token not in server.log()


def test_a_reused_refresh_token_ends_its_whole_session(server: Server) -> None:
    user = register_and_login(server)
    stolen = log_in(user)
    other_session = log_in(user)
    renewed = refresh(server, stolen["refresh_token"]).json()

    again = refresh(server, stolen["refresh_token"])
    assert again.status_code == 401
    assert again.json()["code"] == "unauthorized"
    # The whole family ends: the token that replaced the reused one is refused too.
    assert refresh(server, renewed["refresh_token"]).status_code == 401
    [line] = audit_lines(server, "event=refresh_token_reused", f"user_id={user.id}")
    assert "session is revoked" in line
    assert stolen["refresh_token"] not in server.log()
    # Other sessions of the user go on.
    assert refresh(server, other_session["refresh_token"]).status_code == 200


def test_two_exchanges_of_one_token_at_once_cannot_both_succeed(server: Server) -> None:
    user = register_and_login(server)
    pair = log_in(user)
    answers: list[int] = []
    start = threading.Barrier(4)

    def exchange() -> None:
        start.wait()
        answers.append(refresh(server, pair["refresh_token"]).status_code)

    threads = [threading.Thread(target=exchange) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 401, 401, 401]


def test_an_expired_refresh_token_is_refused(server: Server) -> None:
    user = register_and_login(server)
    pair = log_in(user)
    digest = hashlib.sha256(pair["refresh_token"].encode()).hexdigest()
    past = datetime.now(UTC) - timedelta(seconds=1)
    # Time injected: the token's expiry moved into the past rather than waited for.
    server.db.query(
        "UPDATE refresh_token SET expires_at = ? WHERE token_hash = ?",
        past if server.db.engine == "postgres" else str(past),
        digest,
    )
    answer = refresh(server, pair["refresh_token"])
    assert answer.status_code == 401
    assert "log in again" in answer.json()["detail"]


def test_unknown_and_malformed_refresh_tokens(server: Server) -> None:
    assert refresh(server, "not-a-token").status_code == 401
    with server.client() as client:
        assert client.post("/api/auth/refresh", json={}).status_code == 400
        assert client.post("/api/auth/refresh", json={"refresh_token": ""}).status_code == 400
        form = client.post("/api/auth/refresh", data={"refresh_token": "x"})
        assert form.status_code == 415


def test_logout_ends_this_session_only(server: Server) -> None:
    user = register_and_login(server)
    this, other = log_in(user), log_in(user)
    with server.client() as client:
        for _ in range(2):  # ending an ended session is no error
            out = client.post("/api/auth/logout", json={"refresh_token": this["refresh_token"]})
            assert out.status_code == 204, out.text
    assert refresh(server, this["refresh_token"]).status_code == 401
    assert not audit_lines(server, "event=refresh_token_reused", f"user_id={user.id}")
    assert refresh(server, other["refresh_token"]).status_code == 200


def test_logout_all_closes_open_sockets_and_refuses_every_token(server: Server) -> None:
    user = register_and_login(server)
    first, second = log_in(user), log_in(user)
    with Socket(as_user(user, second)) as socket:
        still_open(socket)
        with server.client(first["access_token"]) as client:
            assert client.post("/api/auth/logout-all").status_code == 204
        assert closed(socket, timeout=5) == (4401, "token revoked")
    for pair in (first, second):
        assert me(server, pair["access_token"]) == 401
        assert refresh(server, pair["refresh_token"]).status_code == 401
    assert audit_lines(server, "event=logout_all", f"username={user.username}")
    # Logging in again starts afresh.
    assert me(server, log_in(user)["access_token"]) == 200


def test_logout_all_needs_an_access_token(server: Server) -> None:
    with server.client() as client:
        assert client.post("/api/auth/logout-all").status_code == 401


def test_a_password_change_ends_every_other_session_and_keeps_this_one(server: Server) -> None:
    user = register_and_login(server)
    this, other = log_in(user), log_in(user)
    with server.client(this["access_token"]) as client:
        wrong = client.post(
            "/api/me/password",
            json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        )
        assert (wrong.status_code, wrong.json()["code"]) == (403, "forbidden")
        weak = client.post(
            "/api/me/password", json={"current_password": PASSWORD, "new_password": "password1"}
        )
        assert (weak.status_code, weak.json()["code"]) == (400, "invalid_message")
        assert me(server, other["access_token"]) == 200  # nothing changed so far

    with Socket(as_user(user, other)) as other_socket, Socket(as_user(user, this)) as own:
        with server.client(this["access_token"]) as client:
            changed = client.post(
                "/api/me/password",
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            )
        assert changed.status_code == 200, changed.text
        assert closed(other_socket, timeout=5) == (4401, "token revoked")
        # This session's sockets carried the old access token too: they reconnect with the new.
        assert closed(own, timeout=5) == (4401, "token revoked")
    fresh = changed.json()
    assert session_of(fresh["access_token"]) == session_of(this["access_token"])

    # The other session is over; this one goes on with its new pair.
    assert me(server, other["access_token"]) == 401
    assert refresh(server, other["refresh_token"]).status_code == 401
    assert me(server, this["access_token"]) == 401
    assert me(server, fresh["access_token"]) == 200
    with Socket(as_user(user, fresh)) as socket:
        still_open(socket)
    renewed = refresh(server, fresh["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    # The new password logs in, the old one no more.
    with server.client() as client:
        old = client.post("/api/auth/login", json={"username": user.username, "password": PASSWORD})
        assert old.status_code == 401
    log_in(user, NEW_PASSWORD)
    assert NEW_PASSWORD not in server.log()
    assert audit_lines(server, "event=password_changed", f"username={user.username}")
    assert audit_lines(server, "event=password_change_failed", f"username={user.username}")


def test_a_deactivated_user_cannot_refresh(server: Server) -> None:
    user = register_and_login(server)
    pair = log_in(user)
    server.db.query("UPDATE piccolo_user SET active = ? WHERE id = ?", False, user.id)
    try:
        assert refresh(server, pair["refresh_token"]).status_code == 401
    finally:
        server.db.query("UPDATE piccolo_user SET active = ? WHERE id = ?", True, user.id)
    # Reactivated, the session stays over: it was revoked when refused.
    assert refresh(server, pair["refresh_token"]).status_code == 401
