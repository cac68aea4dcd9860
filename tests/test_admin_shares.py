"""Share links in the Piccolo admin (issue 17, point 3): staff see every link (chat, owner,
prefix, title, dates) and never its token's hash; only superusers revoke one, and only
its revocation can change (the snapshot stays as its owner made it)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from tests.support import AppServer, Server, register_and_login
from tests.test_admin_keys import admin_as, not_in_production  # noqa: F401 (admin_as: a fixture)
from tests.test_shares import new_chat, send, share, shared

TABLE = "/admin/api/tables/chat_share/"


@not_in_production
def test_staff_see_links_and_superusers_revoke_them(
    server: Server,
    admin_as: Callable[[Server | AppServer, str], httpx.Client],  # noqa: F811 (the fixture)
) -> None:
    owner = register_and_login(server)
    chat_id = new_chat(owner, "Shared with the team")
    send(owner, chat_id, "notes")
    link = share(owner, chat_id).json()
    staff, superuser = admin_as(server, "--staff"), admin_as(server, "--superuser")

    rows = staff.get(TABLE, params={"chat": chat_id, "__readable": "true"})
    assert rows.status_code == 200, rows.text
    [row] = rows.json()["rows"]
    assert (row["id"], row["owner"], row["prefix"], row["title"]) == (
        link["id"],
        owner.id,
        link["prefix"],
        "Shared with the team",
    )
    assert row.get("hash") is None  # a secret column: never sent
    sha = hashlib.sha256(link["token"].encode()).hexdigest()
    single = staff.get(f"{TABLE}{link['id']}/")
    assert sha not in rows.text + single.text
    assert link["token"] not in rows.text + single.text
    assert staff.get(TABLE, params={"__visible_fields": "id,hash"}).status_code == 400
    assert staff.post(TABLE, json={"chat": chat_id}).status_code == 405  # made by users only

    # Staff only read; a superuser's edit revokes and changes nothing else.
    now = datetime.now(UTC).isoformat()
    assert staff.patch(f"{TABLE}{link['id']}/", json={"revoked_at": now}).status_code == 405
    assert shared(server, link["token"]).status_code == 200
    changed = superuser.patch(
        f"{TABLE}{link['id']}/", json={"revoked_at": now, "title": "renamed", "messages": "[]"}
    )
    assert changed.status_code == 200, changed.text
    assert shared(server, link["token"]).status_code == 404
    [stored] = server.db.query(
        "SELECT title, messages, revoked_at FROM chat_share WHERE id = ?", uuid.UUID(link["id"])
    )
    assert stored["title"] == "Shared with the team"
    assert "notes" in stored["messages"]
    assert stored["revoked_at"] is not None
    # Revoked it stays: un-revoking changes nothing.
    superuser.patch(f"{TABLE}{link['id']}/", json={"revoked_at": None})
    assert shared(server, link["token"]).status_code == 404
    assert any(
        "event=share_revoked" in line and link["id"] in line and "by=admin" in line
        for line in server.log().splitlines()
    )
