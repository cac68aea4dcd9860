"""An open socket lasts no longer than its token and its user's rights (issue 12, points 2, 9).

Sockets close with 4401 and a reason when their token expires, and within
seconds of their user being deactivated or losing staff, whoever made the
change (our admin hooks, or SQL written straight to the table), on every
instance. A new password or a deactivation revokes every token issued before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from litestar.security.jwt import Token
from websockets.exceptions import ConnectionClosed

from tests.support import (
    JWT_SECRET,
    PASSWORD,
    TEST_HASH_ROUNDS,
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    start_server,
)
from tests.test_admin import admin_client, admin_login
from tests.test_scale_out import BUS_URLS, _require_redis

#: The issue's "within seconds": generous, for a loaded machine.
WITHIN = 15


def closed(socket: Socket, timeout: float = WITHIN) -> tuple[int, str]:
    """Read until the server closes the socket; its close code and reason."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as raised:  # noqa: PT012 (frames may come first)
        while True:
            socket.recv(timeout=max(0.1, deadline - time.monotonic()))
    close = raised.value.rcvd
    assert close is not None, "closed without a close frame"
    return close.code, close.reason


def still_open(socket: Socket) -> None:
    socket.send(action="ping")
    assert socket.recv() == {"type": "pong"}


def me_status(user: User) -> int:
    with user.client() as client:
        return client.get("/api/me").status_code


def login(server: Server, username: str, password: str) -> httpx.Response:
    with server.client() as client:
        return client.post("/api/auth/login", json={"username": username, "password": password})


def promoted(server: Server, *, superuser: bool = False) -> User:
    """A new user made staff (or superuser) in the table, logged in after that."""
    user = register_and_login(server)
    server.db.query(
        "UPDATE piccolo_user SET admin = ?, superuser = ? WHERE id = ?", True, superuser, user.id
    )
    return user


@contextmanager
def admin_session(server: Server, username: str) -> Iterator[httpx.Client]:
    with admin_client(server) as client:
        assert admin_login(client, username).status_code == 200
        yield client


@pytest.fixture
def superuser(server: Server) -> Iterator[httpx.Client]:
    """An admin session of a superuser on the shared server."""
    with admin_session(server, promoted(server, superuser=True).username) as client:
        yield client


# --- the token's own end ------------------------------------------------------------------


def test_a_socket_closes_when_its_token_expires(server: Server) -> None:
    user = register_and_login(server)
    now = datetime.now(UTC)
    short = Token(
        sub=str(user.id), exp=now + timedelta(seconds=3), iat=now, extras={"ver": 0}
    ).encode(JWT_SECRET, "HS256")
    with Socket(User(user.id, user.username, PASSWORD, short, server)) as socket:
        still_open(socket)
        assert closed(socket) == (4401, "token expired")


def test_a_token_without_a_version_is_refused(server: Server) -> None:
    user = register_and_login(server)
    now = datetime.now(UTC)
    unversioned = Token(sub=str(user.id), exp=now + timedelta(minutes=5), iat=now).encode(
        JWT_SECRET, "HS256"
    )
    with server.client(unversioned) as client:
        assert client.get("/api/me").status_code == 401


# --- changes written straight to the table (the periodic re-check) ------------------------


def test_a_socket_closes_within_seconds_of_its_user_being_deactivated(server: Server) -> None:
    user = register_and_login(server)
    with Socket(user) as socket:
        still_open(socket)
        server.db.query("UPDATE piccolo_user SET active = ? WHERE id = ?", False, user.id)
        assert closed(socket) == (4401, "user deactivated")
    assert me_status(user) == 401


def test_a_socket_of_staff_closes_when_staff_rights_are_withdrawn(server: Server) -> None:
    staff = promoted(server)
    plain = register_and_login(server)
    chat_id = _new_chat(staff)
    with Socket(staff) as staff_socket, Socket(plain) as plain_socket:
        staff_socket.send(action="subscribe", chat_id=chat_id, debug=True)
        still_open(staff_socket)
        server.db.query("UPDATE piccolo_user SET admin = ? WHERE id = ?", False, staff.id)
        assert closed(staff_socket) == (4401, "staff rights withdrawn")
        still_open(plain_socket)  # a user who never was staff loses nothing
    # The same token opens a new socket, without staff rights (no `debug` events).
    with Socket(staff) as again:
        still_open(again)


def _new_chat(user: User) -> str:
    with user.client() as client:
        response = client.post("/api/chats", json={"title": "revocation"})
        assert response.status_code == 201, response.text
        return response.json()["id"]


# --- changes through the admin: tokens revoked, our password rules -------------------------


def test_a_password_changed_in_the_admin_revokes_tokens_and_closes_sockets(
    server: Server, superuser: httpx.Client
) -> None:
    user = register_and_login(server)
    new_password = "a new and long passphrase"
    with Socket(user) as socket:
        still_open(socket)
        path = f"/admin/api/tables/piccolo_user/{user.id}/"
        changed = superuser.patch(path, json={"password": new_password})
        assert changed.status_code == 200, changed.text
        assert "password" not in changed.json() or not changed.json()["password"]
        assert closed(socket, timeout=5) == (4401, "token revoked")
    assert me_status(user) == 401
    assert login(server, user.username, PASSWORD).status_code == 401
    fresh = login(server, user.username, new_password)
    assert fresh.status_code == 200, fresh.text
    [row] = server.db.query("SELECT password FROM piccolo_user WHERE id = ?", user.id)
    assert row["password"].startswith(f"pbkdf2_sha256${TEST_HASH_ROUNDS}$")  # our hashing


def test_deactivating_revokes_tokens_for_good(server: Server, superuser: httpx.Client) -> None:
    user = register_and_login(server)
    path = f"/admin/api/tables/piccolo_user/{user.id}/"
    with Socket(user) as socket:
        assert superuser.patch(path, json={"active": False}).status_code == 200
        assert closed(socket, timeout=5) == (4401, "user deactivated")
    assert superuser.patch(path, json={"active": True}).status_code == 200
    assert me_status(user) == 401  # reactivated, but the old token stays revoked
    assert login(server, user.username, PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("password", "why"),
    [("seven77", "8-256"), ("password123", "most common"), ("Sunshine1", "most common")],
)
def test_admin_password_changes_follow_our_rules(
    server: Server, superuser: httpx.Client, password: str, why: str
) -> None:
    user = register_and_login(server)
    refused = superuser.patch(
        f"/admin/api/tables/piccolo_user/{user.id}/", json={"password": password}
    )
    assert refused.status_code == 400, refused.text
    assert why in refused.text
    assert me_status(user) == 200  # nothing changed
    assert login(server, user.username, PASSWORD).status_code == 200


def test_users_added_in_the_admin_follow_our_rules(server: Server, superuser: httpx.Client) -> None:
    def add(username: str, password: str) -> httpx.Response:
        return superuser.post(
            "/admin/api/tables/piccolo_user/",
            json={
                "username": username,
                "password": password,
                "email": f"{username}@example.invalid",
                "active": True,
                "admin": False,
                "superuser": False,
            },
        )

    assert add("added_short", "seven77").status_code == 400
    assert add("added_common", "iloveyou1").status_code == 400
    created = add("added_fine", "a long enough passphrase")
    assert created.status_code == 201, created.text
    assert login(server, "added_fine", "a long enough passphrase").status_code == 200
    [row] = server.db.query("SELECT password FROM piccolo_user WHERE username = 'added_fine'")
    assert row["password"].startswith(f"pbkdf2_sha256${TEST_HASH_ROUNDS}$")  # our hashing


def test_the_admins_own_password_change_follows_our_rules(server: Server) -> None:
    staff = promoted(server).username
    with admin_session(server, staff) as client:

        def change(new: str) -> httpx.Response:
            return client.post(
                "/admin/api/change-password/",
                json={
                    "current_password": PASSWORD,
                    "new_password": new,
                    "confirm_new_password": new,
                },
            )

        assert change("seven77").status_code >= 400
        assert change("football1").status_code >= 400
        assert login(server, staff, PASSWORD).status_code == 200
        assert change("my own new passphrase").status_code < 400
    assert login(server, staff, "my own new passphrase").status_code == 200


def test_registration_refuses_the_most_common_passwords(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/api/auth/register", json={"username": "common_pw", "password": "qwerty123"}
        )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_message"
    assert "common" in response.json()["detail"]


# --- two instances sharing a database and a bus ---------------------------------------------


@pytest.fixture(params=[bus for bus in BUS_URLS if BUS_URLS[bus] is not None])
def pair(
    request: pytest.FixtureRequest,
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Server]]:
    """Two instances on one database and bus; their own re-check is too slow to matter."""
    if request.param == "redis":
        _require_redis()
    db = make_database(engine, migrated=True)
    cwd = tmp_path_factory.mktemp(f"revocation-{engine}-{request.param}")
    settings = {"EVENT_BUS_URL": BUS_URLS[request.param] or "", "WS_RECHECK_SECONDS": "300"}
    a = start_server(db, cwd, **settings)
    try:
        b = start_server(db, cwd, **settings)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_change_in_the_admin_of_one_instance_closes_sockets_on_the_other(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    user, staff = register_and_login(b), promoted(b)
    superuser = promoted(a, superuser=True)
    with (
        admin_session(a, superuser.username) as admin,
        Socket(user) as on_b,
        Socket(staff) as staff_on_b,
    ):
        still_open(on_b)
        still_open(staff_on_b)

        demoted = admin.patch(f"/admin/api/tables/piccolo_user/{staff.id}/", json={"admin": False})
        assert demoted.status_code == 200, demoted.text
        assert closed(staff_on_b, timeout=WITHIN) == (4401, "staff rights withdrawn")

        path = f"/admin/api/tables/piccolo_user/{user.id}/"
        assert admin.patch(path, json={"active": False}).status_code == 200
        assert closed(on_b, timeout=WITHIN) == (4401, "user deactivated")


def test_every_instance_rechecks_its_own_sockets(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """SQL written straight to the table reaches every instance by its own re-check."""
    db = make_database(engine, migrated=True)
    settings = {"EVENT_BUS_URL": BUS_URLS["redis"] or "", "WS_RECHECK_SECONDS": "1"}
    _require_redis()
    a = start_server(db, tmp_path, **settings)
    b = start_server(db, tmp_path, **settings)
    try:
        user = register_and_login(a)
        with Socket(user) as on_a, Socket(_on(user, b)) as on_b:
            still_open(on_a)
            still_open(on_b)
            db.query("UPDATE piccolo_user SET active = ? WHERE id = ?", False, user.id)
            assert closed(on_a) == (4401, "user deactivated")
            assert closed(on_b) == (4401, "user deactivated")
    finally:
        a.stop()
        b.stop()


def _on(user: User, server: Server) -> User:
    return User(user.id, user.username, user.password, user.token, server)
