"""Audit lines on ``chatsvc.audit`` (issue 12): failed logins, admin logins and changes
made through the admin, with who, what and where; never a password, token or value."""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.support import PASSWORD, Server, register_and_login, unique_username
from tests.test_admin import admin_client, admin_login, create_user


def audit_lines(server: Server, *needles: str) -> list[str]:
    return [
        line
        for line in server.log().splitlines()
        if "chatsvc.audit:" in line and all(needle in line for needle in needles)
    ]


def test_a_failed_login_is_audited_without_its_password(server: Server) -> None:
    user = register_and_login(server)
    wrong = f"wrong-{secrets.token_hex(8)}"
    unknown = unique_username("ghost")
    with server.client() as client:
        for username in (user.username, unknown):
            response = client.post(
                "/api/auth/login",
                json={"username": username, "password": wrong},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert response.status_code == 401
    [line] = audit_lines(server, f"username={user.username}", "event=login_failed")
    assert "login failed: wrong password" in line
    assert "address=198.51.100.7" in line
    assert "via=api" in line
    [ghost] = audit_lines(server, f"username={unknown}")
    assert "unknown user" in ghost
    log = server.log()
    assert wrong not in log
    assert user.token not in log


def test_a_username_cannot_forge_an_audit_line(server: Server) -> None:
    forged = "x\nINFO chatsvc.audit: admin login username=root"
    with server.client() as client:
        response = client.post("/api/auth/login", json={"username": forged, "password": "p" * 8})
    assert response.status_code == 401
    assert not [line for line in server.log().splitlines() if line.endswith("username=root")]
    assert audit_lines(server, "event=login_failed", 'username="x\\nINFO')


def test_admin_logins_and_failures_are_audited(server: Server, tmp_path: Path) -> None:
    staff = create_user(server, tmp_path, "--staff")
    plain = register_and_login(server)
    with admin_client(server) as client:
        assert admin_login(client, staff, "not the password").status_code == 401
        assert admin_login(client, plain.username).status_code == 401
        assert admin_login(client, staff).status_code == 200
    [failed] = audit_lines(server, f"username={staff}", "event=login_failed")
    assert "via=admin" in failed
    assert "address=127.0.0.1" in failed
    [not_staff] = audit_lines(server, f"username={plain.username}", "via=admin")
    assert "not staff" in not_staff
    [success] = audit_lines(server, f"username={staff}", "event=admin_login")
    assert "address=127.0.0.1" in success
    assert "not the password" not in server.log()
    assert PASSWORD not in server.log()


def test_admin_changes_are_audited_with_who_what_and_where(server: Server, tmp_path: Path) -> None:
    victim = register_and_login(server)
    superuser_name = create_user(server, tmp_path, "--superuser")
    staff_name = create_user(server, tmp_path, "--staff")
    with ExitStack() as clients:
        superuser, staff = (clients.enter_context(admin_client(server)) for _ in range(2))
        assert admin_login(superuser, superuser_name).status_code == 200
        assert admin_login(staff, staff_name).status_code == 200
        changes(server, victim.id, superuser, staff)
    changes_audited(server, victim.id, superuser_name, staff_name)


SECRET_NAME = f"Ann-{secrets.token_hex(6)}"


def changes(server: Server, victim: int, superuser: httpx.Client, staff: httpx.Client) -> None:
    path = f"/admin/api/tables/piccolo_user/{victim}/"
    changed = superuser.patch(
        path,
        json={"first_name": SECRET_NAME, "active": False},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert changed.status_code == 200, changed.text
    refused = staff.delete(path)
    assert refused.status_code == 405


def changes_audited(server: Server, victim: int, superuser_name: str, staff_name: str) -> None:
    [update] = audit_lines(server, "event=admin_change", f"user={superuser_name}")
    assert f"admin update piccolo_user {victim}" in update
    assert "fields=active,first_name" in update
    assert "address=203.0.113.9" in update
    assert "status=200" in update
    [delete] = audit_lines(server, "event=admin_change", f"user={staff_name}")
    assert f"admin delete piccolo_user {victim}" in delete
    assert "status=405" in delete
    assert SECRET_NAME not in server.log()  # names of fields, never their values


def test_a_malformed_admin_login_is_refused_and_audited_cut_short(server: Server) -> None:
    """A username or password our rules could never accept is refused before any lookup
    or hashing; the audit line keeps at most 64 characters of the username."""
    mark = secrets.token_hex(4)
    username = f"m{mark}" + "x" * 55 + "-tail-never-logged"  # 64 characters before "-tail"
    with admin_client(server) as client:
        assert admin_login(client, username, "short").status_code == 401
        assert client.get("/admin/api/tables/").status_code == 401
    [line] = audit_lines(server, f"username=m{mark}", "event=login_failed")
    assert "admin login failed: malformed" in line
    assert "via=admin" in line
    assert f"username={username[:64]}" in line
    assert "-tail-never-logged" not in server.log()
