"""Stored passwords (chatsvc/accounts.py): new hashes take ``PASSWORD_HASH_ROUNDS`` (600,000
by default, and at least that in production); a hash of fewer rounds still logs in and is
upgraded at that login, one of more is kept; a stored value that is no hash never lets
anyone in; a password with a NUL character is refused at registration."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from chatsvc.settings import ConfigError, Settings, load_settings
from chatsvc.tables import PASSWORD_ITERATIONS, Account
from tests.support import (
    PASSWORD,
    TEST_HASH_ROUNDS,
    Server,
    register_and_login,
    unique_username,
)


def stored_password(server: Server, username: str) -> str:
    [row] = server.db.query("SELECT password FROM piccolo_user WHERE username = ?", username)
    return row["password"]


def log_in(server: Server, username: str, password: str = PASSWORD) -> int:
    with server.client() as client:
        answer = client.post("/api/auth/login", json={"username": username, "password": password})
    return answer.status_code


def rounds_of(stored: str) -> int:
    return int(Account.split_stored_password(stored)[1])


def test_new_hashes_take_600000_rounds_by_default_and_at_least_that_in_production() -> None:
    assert Settings().password_hash_rounds == PASSWORD_ITERATIONS == 600_000
    fewer = {"PASSWORD_HASH_ROUNDS": "1000"}
    assert load_settings(fewer, env_file=None).password_hash_rounds == 1_000
    with pytest.raises(ConfigError, match=r"PASSWORD_HASH_ROUNDS.*at least 600000 in production"):
        load_settings({**fewer, "ENVIRONMENT": "production"}, env_file=None)
    with pytest.raises(ConfigError, match="PASSWORD_HASH_ROUNDS"):
        load_settings({"PASSWORD_HASH_ROUNDS": "999"}, env_file=None)


def test_a_server_hashes_with_its_rounds(
    server: Server, spawn_server: Callable[..., Server]
) -> None:
    user = register_and_login(server)  # the suite's servers take the fewest rounds
    assert rounds_of(stored_password(server, user.username)) == TEST_HASH_ROUNDS
    by_default = spawn_server(PASSWORD_HASH_ROUNDS="")  # unset: the default
    user = register_and_login(by_default)
    assert rounds_of(stored_password(by_default, user.username)) == 600_000


def test_a_hash_of_more_rounds_is_kept(server: Server) -> None:
    """A password set at more rounds (the admin's hashes, a former setting) is not lowered."""
    user = register_and_login(server)
    more = Account.hash_password(PASSWORD, secrets.token_hex(12), TEST_HASH_ROUNDS * 3)
    server.db.query("UPDATE piccolo_user SET password = ? WHERE username = ?", more, user.username)
    assert log_in(server, user.username) == 200
    assert stored_password(server, user.username) == more


def test_an_older_hash_logs_in_and_is_upgraded(server: Server) -> None:
    user = register_and_login(server)
    older = Account.hash_password(PASSWORD, secrets.token_hex(12), TEST_HASH_ROUNDS // 2)
    server.db.query("UPDATE piccolo_user SET password = ? WHERE username = ?", older, user.username)

    assert log_in(server, user.username, "not-the-password") == 401
    assert stored_password(server, user.username) == older  # a failed login changes nothing
    assert log_in(server, user.username) == 200
    upgraded = stored_password(server, user.username)
    assert upgraded != older
    assert rounds_of(upgraded) == TEST_HASH_ROUNDS  # the server's rounds
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
