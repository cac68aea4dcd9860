"""The Piccolo engine chosen by ``DATABASE_URL``, and its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
import asyncpg
from piccolo.engine import engine_finder
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from chatsvc.errors import Overloaded
from chatsvc.sqlite import EmbeddedSQLiteEngine

#: Longest a write may wait for the database (``DATABASE_WRITE_TIMEOUT``'s default).
WRITE_SECONDS = 10.0


def engine_from_url(url: str, *, write_seconds: float = WRITE_SECONDS) -> Engine:
    """``sqlite:///rel.db``, ``sqlite:////abs.db`` or ``postgresql://...`` -> a Piccolo engine.

    On PostgreSQL a write that waits for a lock longer than ``write_seconds``
    fails cleanly on the server (``lock_timeout``), before our own deadline
    would have to cancel a transaction half-way.
    """
    if url.startswith("sqlite:///"):
        return EmbeddedSQLiteEngine(url.removeprefix("sqlite:///"), write_seconds=write_seconds)
    if url.startswith(("postgresql://", "postgres://")):
        return ServerPostgresEngine(url, write_seconds=write_seconds)
    raise ValueError(f"unsupported DATABASE_URL scheme: {urlsplit(url).scheme!r}")


class ServerPostgresEngine(PostgresEngine):
    """Piccolo's PostgreSQL engine; lock waits end at ``write_seconds`` (``lock_timeout``)."""

    __slots__ = ("write_seconds",)

    def __init__(self, url: str, *, write_seconds: float) -> None:
        lock_timeout = str(max(1, round(write_seconds * 1000)))  # milliseconds
        super().__init__(config={"dsn": url, "server_settings": {"lock_timeout": lock_timeout}})
        self.write_seconds = write_seconds


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
    """Open the PostgreSQL pool, or SQLite's writer and readers, for the app's lifetime."""
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=20)
        try:
            yield
        finally:
            await engine.close_connection_pool()
    elif isinstance(engine, EmbeddedSQLiteEngine):
        async with engine.serve():
            yield
    else:
        yield


PING_SECONDS = 3.0

#: PostgreSQL errors that mean "too busy right now": a lock waited on past ``lock_timeout``.
_BUSY = (asyncpg.LockNotAvailableError,)


@asynccontextmanager
async def write_transaction(engine: Engine, *, urgent: bool = False) -> AsyncIterator[None]:
    """A transaction that an abort or a shutdown cannot cut in half.

    On the embedded SQLite it is a turn of the one writer (``chatsvc/sqlite.py``).
    On PostgreSQL, cancelling a Piccolo transaction through anyio leaks its pool
    connection (docs/architecture.md), so the whole transaction runs in a
    shielded scope; lock waits end at ``lock_timeout`` on the server, and the
    deadline here (twice that) is a last resort. Either way a write that could
    not be done in time raises :class:`Overloaded`, which may be retried. An
    ``urgent`` write (a reply's end) goes before the others queued on SQLite.
    """
    if isinstance(engine, EmbeddedSQLiteEngine):
        async with engine.write_turn(urgent=urgent):
            yield
        return
    seconds = engine.write_seconds if isinstance(engine, ServerPostgresEngine) else WRITE_SECONDS
    try:
        with anyio.fail_after(2 * seconds, shield=True):
            async with engine.transaction():
                yield
    except (TimeoutError, *_BUSY) as exc:
        raise Overloaded() from exc


class KeyedTurns:
    """One holder at a time per key, in arrival order; keys nobody holds are forgotten.

    For PostgreSQL's row locks: a transaction that waits on a locked row holds
    a pool connection while it waits, so 200 sends of one user would take all
    20 and every read would queue behind them. Queued here instead, a user's
    sends wait in the process and hold nothing.
    """

    def __init__(self) -> None:
        self._locks: dict[object, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def turn(self, key: object, *, seconds: float) -> AsyncIterator[None]:
        """Raises :class:`Overloaded` when the turn did not come within ``seconds``."""
        lock, holders = self._locks.get(key, (None, 0))
        lock = lock or anyio.Lock()
        self._locks[key] = (lock, holders + 1)
        try:
            try:
                with anyio.fail_after(seconds):
                    await lock.acquire()
            except TimeoutError as exc:
                raise Overloaded() from exc
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, holders = self._locks[key]
            if holders == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, holders - 1)


async def ping(engine: Engine) -> None:
    """One real round trip, bounded in time; raises on any database error."""
    with anyio.fail_after(PING_SECONDS):
        await engine.run_ddl("SELECT 1")
