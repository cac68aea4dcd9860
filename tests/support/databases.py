"""Real databases the tests create and look into: SQLite files and fresh PostgreSQL databases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import sqlite3
import uuid
from collections.abc import Coroutine
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

# Piccolo's SQLite adapters (UUIDs, datetimes) are registered with sqlite3 on import; the raw
# SQL of ``Database.query`` passes such values.
importlib.import_module("piccolo.engine.sqlite")

PG_ADMIN_URL = os.environ.get(
    "CHATSVC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end, also from a test where a loop runs (Playwright's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class Database:
    """A real database a test can look into (raw SQL with ``?`` placeholders)."""

    engine: str
    url: str

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        if self.engine == "sqlite":
            connection = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            connection.row_factory = sqlite3.Row
            try:
                with connection:
                    rows: list[sqlite3.Row] = connection.execute(sql, params).fetchall()
                    return [dict(row) for row in rows]
            finally:
                connection.close()
        numbered = sql
        for index in range(1, len(params) + 1):
            numbered = numbered.replace("?", f"${index}", 1)

        async def run() -> list[dict[str, Any]]:
            connection = await asyncpg.connect(self.url)
            try:
                return [dict(row) for row in await connection.fetch(numbered, *params)]
            finally:
                await connection.close()

        return run_async(run())


async def postgres_reachable() -> str | None:
    """``None`` when PostgreSQL at ``PG_ADMIN_URL`` answers, else why not."""
    try:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        await connection.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def create_postgres_database(template: str | None = None) -> str:
    """A fresh PostgreSQL database, empty or a copy of ``template`` (a URL); its URL."""
    name = f"chatsvc_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await connection.close()
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


async def drop_postgres_databases(urls: list[str]) -> None:
    """Drop them, several at once: each DROP DATABASE waits for a checkpoint (about 1 s
    here), and PostgreSQL serves the waits of concurrent drops with one."""
    slots = asyncio.Semaphore(16)

    async def drop(url: str) -> None:
        name = url.rsplit("/", 1)[1]
        async with slots:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await connection.close()

    await asyncio.gather(*(drop(url) for url in urls))


def migrate_database(db: Database) -> None:
    """Apply every migration to ``db``, as ``chatsvc migrate`` does."""
    from chatsvc.cli import migrate
    from chatsvc.database import engine_from_url

    run_async(migrate(engine_from_url(db.url), True))


def copy_sqlite(source: Database, path: Path) -> Database:
    """A copy of an SQLite database (by SQLite's backup: a WAL holds no part of it)."""
    original = sqlite3.connect(source.url.removeprefix("sqlite:///"))
    with closing(original), closing(sqlite3.connect(path)) as copy:
        original.backup(copy)
    return Database("sqlite", f"sqlite:///{path}")
