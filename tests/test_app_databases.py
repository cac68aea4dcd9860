"""Each app built by ``create_app`` serves from the database of its own settings (issue 14).

In-process: the apps are served by real uvicorn servers in threads, on loopback
ports, and driven by real HTTP clients.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from chatsvc.app import create_app
from chatsvc.cli import migrate
from chatsvc.database import engine_from_url
from chatsvc.settings import Settings
from tests.support import (
    HIGH_LIMITS,
    JWT_SECRET,
    PASSWORD,
    Database,
    unique_username,
)
from tests.support.http import tls
from tests.support.inprocess import serving

# Litestar 2.25 warns of what it will drop in 3.0 (services found by parameter name,
# `data` without a body marker) as it serves the first request. Subprocess servers show
# no warning; in process, where warnings are errors, the request would fail.
pytestmark = pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")


def settings_for(db: Database) -> Settings:
    limits = {name.lower(): int(value) for name, value in HIGH_LIMITS.items()}
    return Settings(database_url=db.url, environment="test", jwt_secret=JWT_SECRET, **limits)


def chat_and_reply(url: str, title: str) -> str:
    """Register, log in, create a chat and wait for the (echo) reply; gives the username."""
    username = unique_username()
    with httpx.Client(base_url=url, timeout=60, verify=tls()) as client:
        account = {"username": username, "password": PASSWORD}
        assert client.post("/api/auth/register", json=account).status_code == 201
        token = client.post("/api/auth/login", json=account).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        chat = client.post("/api/chats/", json={"title": title})
        assert chat.status_code == 201, chat.text
        sent = client.post(f"/api/chats/{chat.json()['id']}/messages", json={"content": title})
        assert sent.status_code == 200, sent.text
        assert sent.json()["message"]["status"] == "complete"
    return username


async def test_two_apps_serve_side_by_side_each_from_its_own_database(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What piccolo_conf.py would read: neither app may touch it.
    stray = tmp_path / "from-the-environment.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{stray}")
    first, second = make_database(engine), make_database(engine)
    for db in (first, second):
        assert await migrate(engine_from_url(db.url), True) > 0
    frozen = gc.get_freeze_count()

    with (
        serving(create_app(settings_for(first))) as first_url,
        serving(create_app(settings_for(second))) as second_url,
        ThreadPoolExecutor(2) as pool,
    ):
        # Both at once, each request and each reply (written by a task of its app) in flight
        # while the other app serves.
        journeys = [
            pool.submit(chat_and_reply, first_url, "first chat"),
            pool.submit(chat_and_reply, second_url, "second chat"),
        ]
        first_user, second_user = (journey.result() for journey in journeys)
        # Freezing the start-up heap is `chatsvc serve`'s decision, not the apps': a host
        # serving several keeps its garbage collection as it was.
        assert gc.get_freeze_count() == frozen

    for db, user, title in (
        (first, first_user, "first chat"),
        (second, second_user, "second chat"),
    ):
        assert [r["username"] for r in db.query("SELECT username FROM piccolo_user")] == [user]
        assert [r["title"] for r in db.query("SELECT title FROM chat")] == [title]
        roles = sorted(r["role"] for r in db.query("SELECT role FROM message"))
        assert roles == ["assistant", "user"]
    assert not stray.exists()
