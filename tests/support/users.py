"""Users registered through the API, and messages stored behind its back."""

from __future__ import annotations

import contextlib
import io
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from chatsvc.cli import create_user
from chatsvc.settings import load_settings
from tests.support.databases import Database, run_async
from tests.support.servers import TEST_HASH_ROUNDS, Server

PASSWORD = "correct horse battery"


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str
    server: Server = field(repr=False)

    def client(self) -> httpx.Client:
        return self.server.client(self.token)


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def register_and_login(server: Server, username: str | None = None) -> User:
    username = username or unique_username()
    with server.client() as client:
        created = client.post(
            "/api/auth/register", json={"username": username, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        login = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
    return User(created.json()["id"], username, PASSWORD, login.json()["access_token"], server)


def insert_message(
    db: Database,
    chat_id: str,
    content: str,
    *,
    role: str = "user",
    created_at: datetime | None = None,
) -> str:
    """Store a message directly, as the generation engine would."""
    message_id = uuid.uuid4()
    stamp = created_at or datetime.now(UTC)
    # It follows the chat's newest message, as the server links a message it stores.
    db.query(
        "INSERT INTO message (id, chat, owner, parent, role, content, status, created_at) "
        "VALUES (?, ?, (SELECT owner FROM chat WHERE id = ?), (SELECT id FROM message "
        "WHERE chat = ? ORDER BY created_at DESC, id DESC LIMIT 1), ?, ?, 'complete', ?)",
        message_id,
        uuid.UUID(chat_id),
        uuid.UUID(chat_id),
        uuid.UUID(chat_id),
        role,
        content,
        stamp,
    )
    return str(message_id)


def create_account(db: Database, *flags: str) -> str:
    """What ``chatsvc createuser NAME FLAGS`` does (``chatsvc.cli.create_user``), run in this
    process against ``db``: no interpreter to start per account (tests/test_cli.py runs the
    command itself). Hashed with the suite's servers' rounds: at production's 600,000 the
    hash (and each login's check of it) was half a minute of the suite's CPU. ``flags``:
    ``--staff``, ``--superuser``. Returns NAME."""
    unknown = set(flags) - {"--staff", "--superuser"}
    assert not unknown, unknown
    username = unique_username("staff" if flags else "user")
    environment = {"DATABASE_URL": db.url, "PASSWORD_HASH_ROUNDS": str(TEST_HASH_ROUNDS)}
    settings = load_settings(environment, env_file=None)
    staff, superuser = "--staff" in flags, "--superuser" in flags
    with contextlib.redirect_stdout(io.StringIO()):  # its "created user ..." line
        run_async(create_user(settings, username, PASSWORD, staff, superuser))
    return username
