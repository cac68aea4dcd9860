"""Registration, login and token rules (docs/protocol.md section 1), over real HTTP."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from chatsvc.settings import load_settings
from tests.support import (
    JWT_SECRET,
    PASSWORD,
    TEST_HASH_ROUNDS,
    Server,
    User,
    unique_username,
)
from tests.support.servers import TEST_ACCESS_SECONDS

PROTECTED_ROUTES = [
    ("GET", "/api/me"),
    ("GET", "/api/chats"),
    ("POST", "/api/chats"),
    ("GET", "/api/users/1/chats"),
    ("GET", "/api/chats/00000000-0000-4000-8000-000000000000"),
    ("GET", "/api/chats/00000000-0000-4000-8000-000000000000/messages"),
    ("PATCH", "/api/chats/00000000-0000-4000-8000-000000000000"),
    ("DELETE", "/api/chats/00000000-0000-4000-8000-000000000000"),
]


def test_register_returns_the_new_user(server: Server) -> None:
    username = unique_username()
    with server.client() as client:
        response = client.post(
            "/api/auth/register", json={"username": username, "password": PASSWORD}
        )
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == username
    assert isinstance(body["id"], int)
    rows = server.db.query("SELECT active, password FROM piccolo_user WHERE username = ?", username)
    assert len(rows) == 1
    assert rows[0]["active"] in (True, 1)
    # The server's rounds (the suite's servers take the fewest: tests/test_passwords.py).
    assert rows[0]["password"].startswith(f"pbkdf2_sha256${TEST_HASH_ROUNDS}$")
    assert PASSWORD not in rows[0]["password"]


def test_duplicate_username_is_409(alice: User) -> None:
    with alice.server.client() as client:
        response = client.post(
            "/api/auth/register", json={"username": alice.username, "password": "another-pw1"}
        )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    rows = alice.server.db.query(
        "SELECT count(*) AS n FROM piccolo_user WHERE username = ?", alice.username
    )
    assert rows[0]["n"] == 1


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("ab", PASSWORD, "username"),
        ("a" * 65, PASSWORD, "username"),
        ("bad name", PASSWORD, "username"),
        ("bad/name", PASSWORD, "username"),
        ("ok_name", "short", "password"),
        ("ok_name", "p" * 257, "password"),
    ],
)
def test_register_length_and_charset_rules(
    server: Server, username: str, password: str, field: str
) -> None:
    with server.client() as client:
        response = client.post(
            "/api/auth/register", json={"username": username, "password": password}
        )
    assert response.status_code == 400
    body = response.json()
    assert field in body["detail"]
    assert [e["key"] for e in body["extra"]] == [field]
    assert not server.db.query("SELECT id FROM piccolo_user WHERE username = ?", username)


def test_register_accepts_the_boundaries(server: Server) -> None:
    with server.client() as client:
        for username, password in [
            ("abc" + unique_username()[-6:], "p" * 8),
            ("A.b-c_" + "x" * 52 + unique_username()[-6:], "p" * 256),
        ]:
            response = client.post(
                "/api/auth/register", json={"username": username, "password": password}
            )
            assert response.status_code == 201, response.text
            login = client.post(
                "/api/auth/login", json={"username": username, "password": password}
            )
            assert login.status_code == 200, login.text


def test_login_with_json_and_with_oauth2_form(alice: User) -> None:
    with alice.server.client() as client:
        as_json = client.post(
            "/api/auth/login", json={"username": alice.username, "password": PASSWORD}
        )
        as_form = client.post(
            "/api/auth/login", data={"username": alice.username, "password": PASSWORD}
        )
    for response in (as_json, as_form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "bearer"
        claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
        assert claims["sub"] == str(alice.id)
        # JWT_TTL_SECONDS, less the fraction of a second `exp` has no room for.
        lifetime = (TEST_ACCESS_SECONDS - 1, TEST_ACCESS_SECONDS)
        assert body["expires_in"] in lifetime
        assert claims["exp"] - claims["iat"] in lifetime
        assert body["refresh_token"]
        assert body["refresh_expires_in"] == 30 * 86_400
        with alice.server.client(body["access_token"]) as client:
            me = client.get("/api/me").json()
        assert (me["id"], me["username"]) == (alice.id, alice.username)


def test_bad_credentials_are_401_with_identical_bodies(alice: User) -> None:
    with alice.server.client() as client:
        wrong_password = client.post(
            "/api/auth/login", json={"username": alice.username, "password": "wrong-password"}
        )
        unknown_user = client.post(
            "/api/auth/login", json={"username": unique_username(), "password": "wrong-password"}
        )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.content == unknown_user.content
    assert wrong_password.json()["code"] == "unauthorized"


def test_inactive_user_cannot_log_in_and_loses_access(server: Server) -> None:
    from tests.support import register_and_login

    user = register_and_login(server)
    server.db.query("UPDATE piccolo_user SET active = ? WHERE id = ?", False, user.id)
    with server.client() as client:
        login = client.post(
            "/api/auth/login", json={"username": user.username, "password": PASSWORD}
        )
        unknown = client.post(
            "/api/auth/login", json={"username": unique_username(), "password": PASSWORD}
        )
    assert login.status_code == 401
    assert login.content == unknown.content
    with user.client() as client:
        assert client.get("/api/me").status_code == 401


def test_login_body_errors_name_the_field(server: Server) -> None:
    with server.client() as client:
        missing = client.post("/api/auth/login", json={"username": "someone"})
        unknown = client.post(
            "/api/auth/login", json={"username": "x", "password": "y", "extra": 1}
        )
        not_json = client.post(
            "/api/auth/login", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert missing.status_code == 400
    assert "password" in missing.json()["detail"]
    assert unknown.status_code == 400
    assert "extra" in unknown.json()["detail"]
    assert not_json.status_code == 400
    assert "JSON" in not_json.json()["detail"]


def _tokens(user: User) -> dict[str, str | None]:
    now = int(time.time())
    header, payload, signature = user.token.split(".")
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "tampered": f"{header}.{payload}.{forged_signature}",
        "wrong key": jwt.encode(
            {"sub": str(user.id), "exp": now + 600, "iat": now}, "another-secret" * 4
        ),
        "expired": jwt.encode(
            {"sub": str(user.id), "exp": now - 60, "iat": now - 3700}, JWT_SECRET
        ),
        "unknown user": jwt.encode({"sub": "987654", "exp": now + 600, "iat": now}, JWT_SECRET),
        "not a user id": jwt.encode({"sub": "alice", "exp": now + 600, "iat": now}, JWT_SECRET),
    }


@pytest.mark.parametrize(("method", "path"), PROTECTED_ROUTES)
def test_protected_routes_need_a_valid_token(alice: User, method: str, path: str) -> None:
    for name, token in _tokens(alice).items():
        with alice.server.client(token) as client:
            response = client.request(
                method, path, json={} if method in ("POST", "PATCH") else None
            )
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] == "unauthorized"
        assert "Traceback" not in response.text


def test_valid_token_passes(alice: User) -> None:
    with alice.client() as client:
        assert client.get("/api/me").status_code == 200


def test_query_token_is_not_accepted_on_http_routes(alice: User) -> None:
    with alice.server.client() as client:
        response = client.get("/api/me", params={"token": alice.token})
    assert response.status_code == 401


def test_registration_can_be_switched_off(serve_app) -> None:  # type: ignore[no-untyped-def]
    closed = serve_app(ALLOW_REGISTRATION="false")
    username = unique_username()
    with closed.client() as client:
        response = client.post(
            "/api/auth/register", json={"username": username, "password": PASSWORD}
        )
    assert response.status_code == 403
    assert "registration" in response.json()["detail"]
    assert not closed.db.query("SELECT id FROM piccolo_user WHERE username = ?", username)


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", "Bearer:", ""])
def test_only_the_bearer_scheme_carries_a_token(alice: User, scheme: str) -> None:
    with alice.server.client() as client:
        header = f"{scheme} {alice.token}".lstrip()
        response = client.get("/api/me", headers={"Authorization": header})
    assert response.status_code == 401, (scheme, response.text)
    assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(alice: User, scheme: str) -> None:
    with alice.server.client() as client:
        response = client.get("/api/me", headers={"Authorization": f"{scheme} {alice.token}"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == alice.id


def test_a_token_cookie_does_not_authenticate(alice: User) -> None:
    with alice.server.client() as client:
        me = client.get("/api/me", headers={"Cookie": f"token={alice.token}"})
        created = client.post(
            "/api/chats", json={"title": "by cookie"}, headers={"Cookie": f"token={alice.token}"}
        )
    assert me.status_code == 401
    assert created.status_code == 401
    assert not alice.server.db.query(
        "SELECT id FROM chat WHERE owner = ? AND title = ?", alice.id, "by cookie"
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_json_bodies_need_the_json_content_type(alice: User, content_type: str | None) -> None:
    """A cross-site form or `fetch` sends these without asking (a "simple request")."""
    title = f"simple request {content_type}"
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"title": title}).encode()
    with alice.client() as client:
        client.headers.pop("content-type", None)
        response = client.post("/api/chats", content=body, headers=headers)
        proper = client.post("/api/chats", json={"title": "proper json"})
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "invalid_message"
    assert "application/json" in response.json()["detail"]
    assert not alice.server.db.query(
        "SELECT id FROM chat WHERE owner = ? AND title = ?", alice.id, title
    )
    assert proper.status_code == 201, proper.text


def test_a_login_takes_json_only_as_json(alice: User) -> None:
    body = json.dumps({"username": alice.username, "password": PASSWORD})
    with alice.server.client() as client:
        as_text = client.post(
            "/api/auth/login", content=body, headers={"content-type": "text/plain"}
        )
        as_form = client.post(
            "/api/auth/login",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        as_json = client.post(
            "/api/auth/login", content=body, headers={"content-type": "application/json"}
        )
    assert as_text.status_code == 415, as_text.text
    assert as_form.status_code == 400, as_form.text  # read as a form: no fields
    assert as_json.status_code == 200, as_json.text


def test_access_tokens_last_15_minutes_by_default() -> None:
    """The default the test servers raise (tests/support/servers.py) for their long run."""
    settings = load_settings({"JWT_SECRET": JWT_SECRET}, env_file=None)
    assert settings.jwt_ttl_seconds == 15 * 60
    assert settings.refresh_token_ttl_seconds == 30 * 86_400
