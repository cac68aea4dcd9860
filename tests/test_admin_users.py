"""Superusers changing users in the admin (chatsvc/api/admin.py), where it goes wrong: a
user that is not there, a row id that is no user id, a password our rules refuse. Nothing
changes, and the admin says why. The rest of the admin is tests/test_admin.py's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support import Server, register_and_login
from tests.test_admin import admin_session, create_user

__all__ = ["admin_session"]  # the fixture, used by name

USERS = "/admin/api/tables/piccolo_user"


def test_changing_a_user_that_is_not_there_is_a_404(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    superuser = admin_session(create_user(server, tmp_path, "--superuser"))
    [row] = server.db.query("SELECT MAX(id) AS top FROM piccolo_user")
    missing = row["top"] + 1000
    answer = superuser.patch(f"{USERS}/{missing}/", json={"active": False})
    assert answer.status_code == 404, answer.text
    assert server.db.query("SELECT id FROM piccolo_user WHERE id = ?", missing) == []


def test_a_row_id_that_is_no_user_id_is_a_400(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    superuser = admin_session(create_user(server, tmp_path, "--superuser"))
    answer = superuser.patch(f"{USERS}/not-a-number/", json={"active": False})
    assert answer.status_code == 400, answer.text


def test_a_password_the_rules_refuse_changes_nothing(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    victim = register_and_login(server)
    superuser = admin_session(create_user(server, tmp_path, "--superuser"))
    [before] = server.db.query("SELECT password FROM piccolo_user WHERE id = ?", victim.id)
    answer = superuser.patch(f"{USERS}/{victim.id}/", json={"password": "short"})
    assert answer.status_code == 400, answer.text
    assert "password" in answer.text
    [after] = server.db.query("SELECT password FROM piccolo_user WHERE id = ?", victim.id)
    assert after == before
    with victim.client() as client:
        assert client.get("/api/me").status_code == 200  # the token still holds
