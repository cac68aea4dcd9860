"""API keys in the Piccolo admin (issue 16, point 2): staff see every key (owner, name,
prefix, dates) and never its hash; superusers revoke one, which closes its sockets at once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser import screenshot
from tests.support import AppServer, Server, Socket, User, create_account, register_and_login
from tests.test_admin import admin_client, admin_login, browser_login
from tests.test_api_keys import as_key, make_key, me_status
from tests.test_revocation import closed, still_open

TABLE = "/admin/api/tables/api_key/"
#: Piccolo warns at every admin login outside production; an in-process server's warnings
#: are the test's, which makes them errors.
not_in_production = pytest.mark.filterwarnings(
    "ignore:If running sessions in production:UserWarning"
)


@pytest.fixture
def admin_as() -> Iterator[Callable[[Server | AppServer, str], httpx.Client]]:
    """Admin sessions over HTTP (``--staff`` or ``--superuser``), closed after the test."""
    with ExitStack() as clients:

        def open_session(server: Server | AppServer, flag: str) -> httpx.Client:
            username = create_account(server.db, flag)
            client = clients.enter_context(admin_client(server))
            response = admin_login(client, username)
            assert response.status_code == 200, response.text
            return client

        yield open_session


def test_staff_see_every_key_but_never_its_hash(
    server: Server, admin_as: Callable[[Server | AppServer, str], httpx.Client]
) -> None:
    alice, bob = register_and_login(server), register_and_login(server)
    alices, bobs = make_key(alice, name="alice's export"), make_key(bob, name="bob's bot")
    staff = admin_as(server, "--staff")

    rows = staff.get(TABLE, params={"__readable": "true", "__page_size": "100"})
    assert rows.status_code == 200, rows.text
    by_id = {row["id"]: row for row in rows.json()["rows"]}
    for made, owner in ((alices, alice), (bobs, bob)):
        row = by_id[made["id"]]
        assert (row["name"], row["prefix"], row["owner"]) == (
            made["name"],
            made["prefix"],
            owner.id,
        )
        assert row["owner_readable"] == owner.username
        assert row["revoked_at"] is None
        assert row.get("hash") is None  # the column is secret: Piccolo sends null
    single = staff.get(f"{TABLE}{alices['id']}/")
    assert single.status_code == 200
    assert single.json().get("hash") is None

    everything = staff.get(TABLE).text + single.text
    for made in (alices, bobs):
        assert made["key"] not in everything
        assert hashlib.sha256(made["key"].encode()).hexdigest() not in everything
    sha = hashlib.sha256(alices["key"].encode()).hexdigest()
    for query in (
        {"__visible_fields": "id,hash"},
        {"__order": "hash"},
        {"__order": "-hash"},
        {"hash": sha},  # no oracle: filtering by the hash is refused too
        {"hash__match": "starts", "hash": sha[:4]},
    ):
        assert staff.get(TABLE, params=query).status_code == 400, query

    # Staff only read: revoking is for superusers.
    assert staff.patch(f"{TABLE}{alices['id']}/", json={"revoked_at": None}).status_code == 405
    assert staff.delete(f"{TABLE}{alices['id']}/").status_code == 405
    assert me_status(server, alices["key"]) == 200


@not_in_production
def test_a_superuser_revokes_a_key_and_its_socket_closes_at_once(
    serve_app: Callable[..., AppServer],
    admin_as: Callable[[Server | AppServer, str], httpx.Client],
) -> None:
    app = serve_app(WS_RECHECK_SECONDS="300")  # only the revocation can close the socket
    user = register_and_login(app)
    doomed, kept = make_key(user), make_key(user)
    superuser = admin_as(app, "--superuser")
    path = f"{TABLE}{doomed['id']}/"

    with Socket(as_key(user, doomed["key"])) as socket, Socket(as_key(user, kept["key"])) as other:
        still_open(socket)
        now = datetime.now(UTC).isoformat()
        changed = superuser.patch(path, json={"revoked_at": now, "owner": 1, "prefix": "csk_x"})
        assert changed.status_code == 200, changed.text
        assert closed(socket, timeout=5) == (4401, "API key revoked")
        still_open(other)
    assert me_status(app, doomed["key"]) == 401
    assert me_status(app, kept["key"]) == 200
    [row] = app.db.query("SELECT owner, prefix, revoked_at FROM api_key WHERE id = ?", doomed["id"])
    assert (row["owner"], row["prefix"]) == (user.id, doomed["prefix"])  # only what may change
    assert row["revoked_at"] is not None

    unrevoked = superuser.patch(path, json={"revoked_at": None})
    assert unrevoked.status_code == 400
    assert me_status(app, doomed["key"]) == 401
    assert any(
        "event=api_key_revoked" in line and doomed["id"] in line and "by=admin" in line
        for line in app.log().splitlines()
    )


@not_in_production
def test_a_superuser_deletes_a_key_and_its_socket_closes(
    serve_app: Callable[..., AppServer],
    admin_as: Callable[[Server | AppServer, str], httpx.Client],
) -> None:
    app = serve_app(WS_RECHECK_SECONDS="300")
    user = register_and_login(app)
    made = make_key(user)
    superuser = admin_as(app, "--superuser")
    with Socket(as_key(user, made["key"])) as socket:
        still_open(socket)
        assert superuser.delete(f"{TABLE}{made['id']}/").status_code == 204
        assert closed(socket, timeout=5) == (4401, "API key revoked")
    assert me_status(app, made["key"]) == 401
    assert app.db.query("SELECT id FROM api_key WHERE id = ?", made["id"]) == []


def test_keys_are_not_made_in_the_admin(
    server: Server, admin_as: Callable[[Server | AppServer, str], httpx.Client]
) -> None:
    user = register_and_login(server)
    superuser = admin_as(server, "--superuser")
    made = superuser.post(
        TABLE, json={"owner": user.id, "name": "from the admin", "prefix": "csk_", "hash": "0"}
    )
    assert made.status_code == 405
    with user.client() as client:
        assert client.get("/api/keys").json()["items"] == []


def test_a_superuser_sees_the_keys_in_the_browser(
    server: Server, engine: str, page: Page, tmp_path: Path
) -> None:
    owner: User = register_and_login(server)
    made = make_key(owner, name="browser-visible key")
    superuser = create_account(server.db, "--superuser")

    browser_login(page, server, superuser)
    expect(page.locator("#user")).to_contain_text(superuser)
    page.locator('a[href="#/api_key/"]').click()
    page.locator("[data-uitest=filter_button]").click()
    page.locator("input[name=name]").fill("browser-visible key")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator(".table_wrapper tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(made["prefix"])
    expect(rows.first).to_contain_text(owner.username)
    header = page.locator(".table_wrapper thead").inner_text().lower()
    assert "prefix" in header
    assert "hash" not in header
    assert made["key"] not in page.content()
    assert hashlib.sha256(made["key"].encode()).hexdigest() not in page.content()
    popup = page.locator("#message_popup")  # "Successfully applied filter"
    with suppress(PlaywrightTimeoutError):  # unless it went by itself
        popup.locator(".close a").click(timeout=2_000)
    expect(popup).to_be_hidden()
    page.locator("[data-uitest=filter_button]").click()  # hide the filters again
    screenshot(page, f"admin-api-keys-{engine}")
    del tmp_path
