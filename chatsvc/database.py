"""The Piccolo engine chosen by ``DATABASE_URL``, and its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
from piccolo.engine import engine_finder
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType


def engine_from_url(url: str) -> Engine:
    """``sqlite:///rel.db``, ``sqlite:////abs.db`` or ``postgresql://...`` -> a Piccolo engine."""
    if url.startswith("sqlite:///"):
        # A generous busy timeout: SQLite allows one writer at a time.
        return SQLiteEngine(path=url.removeprefix("sqlite:///"), timeout=30)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(config={"dsn": url})
    raise ValueError(f"unsupported DATABASE_URL scheme: {urlsplit(url).scheme!r}")


def describe_url(url: str) -> str:
    """The URL without its password, for logs and the start banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def current_engine() -> Engine:
    """The engine of ``piccolo_conf.py`` (the one every table and migration uses)."""
    engine = engine_finder()
    if engine is None:
        raise RuntimeError("piccolo_conf.py was not found: run chatsvc from its project")
    return engine


@asynccontextmanager
async def connection_pool(engine: Engine) -> AsyncIterator[None]:
    """Open the PostgreSQL pool for the app's lifetime (SQLite has none)."""
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=20)
        try:
            yield
        finally:
            await engine.close_connection_pool()
    else:
        # WAL lets readers proceed while a write commits; the setting sticks to the file.
        await engine.run_ddl("PRAGMA journal_mode=WAL")
        yield


PING_SECONDS = 3.0


#: Longest a transactional write may take; it runs shielded from cancellation.
WRITE_SECONDS = 10.0


@asynccontextmanager
async def write_transaction(engine: Engine) -> AsyncIterator[None]:
    """A transaction that an abort or a shutdown cannot cut in half.

    Cancelling a Piccolo transaction through anyio leaks its pool connection
    (shared/STACK-NOTES.md section 7), so the whole transaction runs in a
    shielded scope with its own deadline. SQLite takes the write lock up front
    (``BEGIN IMMEDIATE``), so two writers queue instead of failing to upgrade.
    """
    with anyio.fail_after(WRITE_SECONDS, shield=True):
        if isinstance(engine, SQLiteEngine):
            transaction = engine.transaction(transaction_type=TransactionType.immediate)
        else:
            transaction = engine.transaction()
        async with transaction:
            yield


async def ping(engine: Engine) -> None:
    """One real round trip, bounded in time; raises on any database error."""
    with anyio.fail_after(PING_SECONDS):
        await engine.run_ddl("SELECT 1")
