"""Stored passwords (chatsvc/accounts.py): a hash of an older iteration count still logs
in and is upgraded at that login; a stored value that is no hash never lets anyone in;
a password with a NUL character is refused at registration."""

from __future__ import annotations

import secrets

from chatsvc.tables import PASSWORD_ITERATIONS, Account
from tests.support import PASSWORD, Server, register_and_login, unique_username


def stored_password(server: Server, username: str) -> str:
    [row] = server.db.query("SELECT password FROM piccolo_user WHERE username = ?", username)
    return row["password"]


def log_in(server: Server, username: str, password: str = PASSWORD) -> int:
    with server.client() as client:
        answer = client.post("/api/auth/login", json={"username": username, "password": password})
    return answer.status_code


def test_an_older_hash_logs_in_and_is_upgraded(server: Server) -> None:
    user = register_and_login(server)
    older = Account.hash_password(PASSWORD, secrets.token_hex(12), 1_000)
    server.db.query("UPDATE piccolo_user SET password = ? WHERE username = ?", older, user.username)

    assert log_in(server, user.username, "not-the-password") == 401
    assert stored_password(server, user.username) == older  # a failed login changes nothing
    assert log_in(server, user.username) == 200
    upgraded = stored_password(server, user.username)
    assert upgraded != older
    assert Account.split_stored_password(upgraded)[1] == str(PASSWORD_ITERATIONS)
    assert log_in(server, user.username) == 200  # the new hash holds the same password
    assert stored_password(server, user.username) == upgraded  # and is kept


def test_a_stored_value_that_is_no_hash_lets_nobody_in(server: Server) -> None:
    user = register_and_login(server)
    logged_before = len(server.log())  # the server is shared: only this test's lines
    server.db.query(
        "UPDATE piccolo_user SET password = ? WHERE username = ?", "disabled", user.username
    )
    assert log_in(server, user.username) == 401
    assert log_in(server, user.username, "disabled") == 401
    assert "Traceback" not in server.log()[logged_before:]


def test_a_password_with_a_nul_character_is_refused(server: Server) -> None:
    username = unique_username()
    with server.client() as client:
        answer = client.post(
            "/api/auth/register",
            json={"username": username, "password": "correct horse\x00battery"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("invalid input: password:")
    assert server.db.query("SELECT id FROM piccolo_user WHERE username = ?", username) == []
