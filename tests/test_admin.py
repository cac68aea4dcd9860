"""The Piccolo admin at ``/admin``: staff log in (in a real browser), nobody else does,
and no response ever carries a password hash."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser import screenshot
from tests.support import (
    PASSWORD,
    AppServer,
    Server,
    User,
    create_account,
    register_and_login,
)
from tests.support.databases import Database
from tests.support.environment import clean_environment
from tests.support.servers import server_environment

LOGIN = "/admin/public/login/"


def create_user(server: Server, cwd: Path, *flags: str) -> str:
    """``chatsvc createuser NAME FLAGS`` against the server's database, in this process
    (``create_account``); returns NAME. ``cwd`` is unused (kept for callers)."""
    del cwd
    return create_account(server.db, *flags)


@contextmanager
def admin_client(server: Server) -> Iterator[httpx.Client]:
    """A client holding the admin's CSRF cookie, and sending it back as the header."""
    with server.client() as client:
        page = client.get("/admin/")  # the single-page app, and the CSRF cookie
        assert page.status_code == 200
        assert '<div id="app">' in page.text
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        yield client


def admin_login(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return client.post(LOGIN, json={"username": username, "password": password})


@pytest.fixture
def admin_session(server: Server) -> Iterator[Callable[[str], httpx.Client]]:
    """Logs a user in to the admin over HTTP; the clients are closed after the test."""
    with ExitStack() as clients:

        def open_session(username: str) -> httpx.Client:
            client = clients.enter_context(admin_client(server))
            response = admin_login(client, username)
            assert response.status_code == 200, response.text
            return client

        yield open_session


def chat_with_message(user: User, content: str) -> tuple[str, str]:
    """A chat of ``user`` with ``content`` sent through the REST API; (chat id, message id)."""
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": "admin test"})
        assert chat.status_code == 201, chat.text
        chat_id = chat.json()["id"]
        reply = client.post(f"/api/chats/{chat_id}/messages", json={"content": content})
        assert reply.status_code == 200, reply.text
        history = client.get(f"/api/chats/{chat_id}/messages")
    assert history.status_code == 200, history.text
    [sent] = [m for m in history.json()["items"] if m["role"] == "user"]
    assert sent["content"] == content
    return chat_id, sent["id"]


def browser_login(page: Page, server: Server, username: str) -> None:
    page.goto(f"{server.url}/admin/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()


# --- the browser ----------------------------------------------------------------------


def test_staff_finds_a_message_in_the_browser(
    server: Server, engine: str, page: Page, tmp_path: Path
) -> None:
    staff = create_user(server, tmp_path, "--staff")
    marker = f"admin-marker-{secrets.token_hex(6)}"
    # Long enough that the list cuts it short: the full text is on the row's page.
    content = f"{marker} " + " ".join(f"word{i}" for i in range(300)) + " the end"
    _, message_id = chat_with_message(register_and_login(server), content)

    browser_login(page, server, staff)
    expect(page.locator("#user")).to_contain_text(staff)
    page.locator('a[href="#/message/"]').click()
    expect(page.locator("h1", has_text="message")).to_be_visible()

    page.locator("[data-uitest=filter_button]").click()
    page.locator("input[name=content]").fill(marker)
    page.locator("select[name=role]").select_option("user")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator(".table_wrapper tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(marker)
    assert "the end" not in rows.first.inner_text()  # the list shows the beginning only

    rows.first.locator(f'a[href="#/message/{message_id}/"]').click()
    textarea = page.locator("textarea[name=content]").first
    expect(textarea).to_have_value(content)
    popup = page.locator("#message_popup")  # "Successfully applied filter", over the text
    with suppress(PlaywrightTimeoutError):  # unless it went by itself
        popup.locator(".close a").click(timeout=2_000)
    expect(popup).to_be_hidden()
    screenshot(page, f"admin-message-{engine}")


def test_a_user_who_is_not_staff_sees_the_login_page_and_no_data(
    server: Server, page: Page
) -> None:
    plain = register_and_login(server)
    chat_with_message(plain, f"private-{secrets.token_hex(6)}")

    browser_login(page, server, plain.username)
    expect(page.locator("#message_popup")).to_contain_text("Problem logging in")
    expect(page.locator("input[name=password]")).to_be_visible()
    expect(page.locator('a[href="#/message/"]')).to_have_count(0)
    assert page.context.request.get(f"{server.url}/admin/api/tables/").status == 401


def test_a_user_who_is_not_staff_gets_no_session(server: Server) -> None:
    plain = register_and_login(server)
    with admin_client(server) as client:
        refused = admin_login(client, plain.username)
        assert refused.status_code == 401
        assert "id" not in client.cookies
        for path in ("/admin/api/tables/", "/admin/api/tables/message/", "/admin/api/user/"):
            assert client.get(path).status_code == 401, path
    rows = server.db.query("SELECT COUNT(*) AS n FROM sessions WHERE user_id = ?", plain.id)
    assert rows[0]["n"] == 0  # refused before any session exists


def test_wrong_passwords_and_deactivated_staff_are_refused(server: Server, tmp_path: Path) -> None:
    staff = create_user(server, tmp_path, "--staff")
    with admin_client(server) as client:
        assert admin_login(client, staff, "not the password").status_code == 401
        assert admin_login(client, "nobody-" + secrets.token_hex(4)).status_code == 401
        assert client.get("/admin/api/tables/").status_code == 401

        assert admin_login(client, staff).status_code == 200
        assert client.get("/admin/api/tables/").status_code == 200
        server.db.query("UPDATE piccolo_user SET active = ? WHERE username = ?", False, staff)
        assert client.get("/admin/api/tables/").status_code == 401  # the open session ends
        assert admin_login(client, staff).status_code == 401
        assert client.get("/admin/api/tables/").status_code == 401


def test_without_a_csrf_token_the_login_is_refused(server: Server, tmp_path: Path) -> None:
    staff = create_user(server, tmp_path, "--staff")
    with server.client() as client:
        response = client.post(LOGIN, json={"username": staff, "password": PASSWORD})
    assert response.status_code == 403
    assert "set-cookie" not in response.headers or "id=" not in response.headers["set-cookie"]


# --- what staff and superusers may do -------------------------------------------------


def test_staff_read_users_but_only_superusers_change_them(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    victim = register_and_login(server)
    staff = admin_session(create_user(server, tmp_path, "--staff"))
    superuser = admin_session(create_user(server, tmp_path, "--superuser"))
    path = f"/admin/api/tables/piccolo_user/{victim.id}/"

    assert staff.get(path).json()["username"] == victim.username
    assert staff.patch(path, json={"active": False}).status_code == 405
    assert staff.delete(path).status_code == 405
    assert staff.post("/admin/api/tables/piccolo_user/", json={"username": "x"}).status_code == 405
    with victim.client() as client:
        assert client.get("/api/me").status_code == 200

    changed = superuser.patch(path, json={"active": False})
    assert changed.status_code == 200, changed.text
    assert changed.json()["active"] is False
    with victim.client() as client:
        assert client.get("/api/me").status_code == 401  # locked out at once


def test_chats_and_messages_are_read_only(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    chat_id, message_id = chat_with_message(register_and_login(server), "read me, do not edit")
    superuser = admin_session(create_user(server, tmp_path, "--superuser"))
    message = f"/admin/api/tables/message/{message_id}/"
    chat = f"/admin/api/tables/chat/{chat_id}/"

    assert superuser.get(message).json()["content"] == "read me, do not edit"
    assert superuser.patch(message, json={"content": "edited"}).status_code == 405
    assert superuser.delete(message).status_code == 405
    assert superuser.patch(chat, json={"title": "edited"}).status_code == 405
    assert superuser.delete(chat).status_code == 405
    # (filtered: were the table writable, only this message would go)
    everything = superuser.delete("/admin/api/tables/message/", params={"id": message_id})
    assert everything.status_code == 405
    assert superuser.get(message).json()["content"] == "read me, do not edit"


def test_chats_filter_by_owner_and_date_and_messages_by_status(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    owner = register_and_login(server)
    other = register_and_login(server)
    chat_id, _ = chat_with_message(owner, "filter me")
    chat_with_message(other, "not mine")
    staff = admin_session(create_user(server, tmp_path, "--staff"))

    chats = staff.get("/admin/api/tables/chat/", params={"owner": owner.id, "__readable": "true"})
    assert [(c["id"], c["owner_readable"]) for c in chats.json()["rows"]] == [
        (chat_id, owner.username)
    ]
    for operator, expected in (("lt", [chat_id]), ("gt", [])):
        dated = staff.get(
            "/admin/api/tables/chat/",
            params={
                "owner": owner.id,
                "created_at": "2999-01-01T00:00:00+00:00",
                "created_at__operator": operator,
            },
        )
        assert [c["id"] for c in dated.json()["rows"]] == expected, dated.text

    messages = staff.get(
        "/admin/api/tables/message/",
        params={"chat": chat_id, "status": "complete"},
    )
    assert sorted(m["role"] for m in messages.json()["rows"]) == ["assistant", "user"]
    streaming = staff.get(
        "/admin/api/tables/message/", params={"chat": chat_id, "status": "streaming"}
    )
    assert streaming.json()["rows"] == []


# --- secrets --------------------------------------------------------------------------


def test_no_admin_response_carries_a_password_hash(
    server: Server, tmp_path: Path, admin_session: Callable[[str], httpx.Client]
) -> None:
    user = register_and_login(server)
    superuser = admin_session(create_user(server, tmp_path, "--superuser"))
    # The server is shared: other tests store values that are no hash (test_passwords.py).
    stored = [row["password"] for row in server.db.query("SELECT password FROM piccolo_user")]
    hashes = [value for value in stored if value.startswith("pbkdf2_sha256$")]
    [own] = server.db.query("SELECT password FROM piccolo_user WHERE id = ?", user.id)
    assert own["password"] in hashes
    table = "/admin/api/tables/piccolo_user"

    responses = [
        superuser.get(f"{table}/"),
        superuser.get(f"{table}/", params={"__readable": "true", "__page_size": "100"}),
        superuser.get(f"{table}/{user.id}/"),
        superuser.get(f"{table}/{user.id}/", params={"__readable": "true"}),
        superuser.get(f"{table}/ids/"),
        superuser.get(f"{table}/new/"),
        superuser.get(f"{table}/schema/"),
        superuser.get(f"{table}/count/"),
        superuser.get("/admin/api/user/"),
        superuser.get("/admin/api/tables/chat/", params={"__readable": "true"}),
        superuser.patch(f"{table}/{user.id}/", json={"first_name": "Ann"}),
    ]
    for response in responses:
        assert response.status_code == 200, (response.request.url, response.text)
        assert "pbkdf2" not in response.text, response.request.url
        assert not any(h in response.text for h in hashes), response.request.url
    rows = responses[1].json()["rows"]
    assert user.id in {r["id"] for r in rows}
    assert all(r["password"] is None for r in rows)
    assert responses[-1].json()["first_name"] == "Ann"

    # Asking for the column by name is refused, whatever the spelling.
    for params in (
        {"__visible_fields": "password"},
        {"__visible_fields": "id,password"},
        {"__order": "password"},
        {"__order": "-password"},
        {"password": "pbkdf2"},
        {"password__match": "starts", "password": "pbkdf2"},
    ):
        refused = superuser.get(f"{table}/", params=params)
        assert refused.status_code == 400, (params, refused.text)
        assert "pbkdf2_sha256$" not in refused.text
    nested = superuser.get("/admin/api/tables/chat/", params={"__visible_fields": "owner.password"})
    assert nested.status_code == 400
    for view in ("user_usage", "user_daily_usage"):  # issue 16: they join users too
        nested = superuser.get(
            f"/admin/api/tables/{view}/", params={"__visible_fields": "account.password"}
        )
        assert nested.status_code == 400, nested.text
    # The sessions table (login tokens) is not in the admin at all.
    assert superuser.get("/admin/api/tables/sessions/").status_code == 404
    assert superuser.get("/admin/api/tables/").json() == [
        "api_key",
        "chat",
        "chat_share",
        "instance",
        "message",
        "message_feedback",
        "piccolo_user",
        "user_daily_usage",
        "user_quota",
        "user_usage",
    ]


def test_the_session_cookie_is_http_only(server: Server, tmp_path: Path) -> None:
    staff = create_user(server, tmp_path, "--staff")
    with admin_client(server) as client:
        response = admin_login(client, staff)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert re.match(r"id=[^;]+;", cookie)
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # ENVIRONMENT=test


def test_in_production_the_session_cookie_needs_https(
    serve_app: Callable[..., AppServer], tmp_path: Path
) -> None:
    production = serve_app(ENVIRONMENT="production", JWT_SECRET=secrets.token_urlsafe(48))
    staff = create_user(production, tmp_path, "--staff")
    with admin_client(production) as client:
        response = admin_login(client, staff)
    assert response.status_code == 200
    assert "Secure" in response.headers["set-cookie"]


# --- the login's own rate limit -------------------------------------------------------


def test_admin_logins_are_rate_limited_per_address(
    serve_app: Callable[..., AppServer], tmp_path: Path
) -> None:
    limited_server = serve_app(LOGIN_ATTEMPTS_PER_MINUTE="3")
    staff = create_user(limited_server, tmp_path, "--staff")
    with admin_client(limited_server) as client:
        statuses = [admin_login(client, staff, "wrong password").status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        assert admin_login(client, staff, "wrong password").status_code == 429
        # The address stays blocked a while, even with the right password.
        assert admin_login(client, staff).status_code == 429
        assert client.get("/admin/").status_code == 200


def test_the_admin_is_loaded_on_its_first_request_not_at_start(tmp_path: Path) -> None:
    """Building the app imports neither Piccolo admin nor FastAPI (a fifth of a start's CPU,
    docs/architecture.md); the first request to ``/admin`` does (the tests above)."""
    code = (
        "import sys\n"
        "from chatsvc.app import create_app\n"
        "from chatsvc.settings import load_settings\n"
        "create_app(load_settings())\n"
        "print(sorted(name for name in ('piccolo_admin', 'fastapi') if name in sys.modules))\n"
    )
    database = Database("sqlite", f"sqlite:///{tmp_path / 'chatsvc.db'}")
    env = clean_environment(**server_environment(database, {}))
    built = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == "[]"


def test_requests_that_come_while_the_admin_is_built_are_all_served(
    serve_app: Callable[..., AppServer],
) -> None:
    """Requests that come while the admin is being built wait for it, and all are served."""
    fresh = serve_app()

    def get_admin(_: int) -> int:
        with fresh.client() as client:
            return client.get("/admin/").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(get_admin, range(8))) == [200] * 8
