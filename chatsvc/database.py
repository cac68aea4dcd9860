"""The Piccolo engine chosen by ``DATABASE_URL``, which app's engine a query uses, its lifetime."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import anyio
import asyncpg
from piccolo.apps.user.tables import BaseUser
from piccolo.engine.base import BaseAtomic, BaseBatch, Engine
from piccolo.engine.postgres import PostgresEngine

from chatsvc.errors import Overloaded
from chatsvc.sqlite import EmbeddedSQLiteEngine

if TYPE_CHECKING:
    from piccolo.query.base import Query
    from piccolo.querystring import QueryString

    from chatsvc.settings import Settings

#: Longest a write may wait for the database (``DATABASE_WRITE_TIMEOUT``'s default).
WRITE_SECONDS = 10.0


def engine_from_url(url: str, *, write_seconds: float = WRITE_SECONDS) -> Engine[Any]:
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


#: Connections in the PostgreSQL pool of one app.
POOL_SIZE = 20
#: Of those, how many ordinary write transactions never take: a burst of sends (each
#: holding a connection for its whole transaction) leaves them to the replies' ends
#: and to reads, so an abort is stored without queueing behind the burst.
URGENT_RESERVE = 5


class ServerPostgresEngine(PostgresEngine):
    """Piccolo's PostgreSQL engine; lock waits end at ``write_seconds`` (``lock_timeout``),
    and at most ``POOL_SIZE - URGENT_RESERVE`` ordinary write transactions run at once."""

    __slots__ = ("write_seconds", "writers")

    def __init__(self, url: str, *, write_seconds: float) -> None:
        lock_timeout = str(max(1, round(write_seconds * 1000)))  # milliseconds
        super().__init__(config={"dsn": url, "server_settings": {"lock_timeout": lock_timeout}})
        self.write_seconds = write_seconds
        self.writers = anyio.Semaphore(POOL_SIZE - URGENT_RESERVE)


def engine_from_settings(settings: Settings) -> Engine[Any]:
    """The engine of ``settings.database_url``: the app's, and its migrations' at start."""
    return engine_from_url(settings.database_url, write_seconds=settings.database_write_timeout)


#: The engine of the app whose code runs in this context (its requests, lifespan and tasks).
_bound_engine: ContextVar[Engine[Any] | None] = ContextVar("chatsvc_engine", default=None)


def use_engine(engine: Engine[Any]) -> _Binding:
    """Run the body, and every task and worker thread it starts, on ``engine``.

    Each app binds its own engine around every connection and its lifespan
    (``ChatsvcApp``), so two apps in one process each query their own database.
    """
    return _Binding(engine)


class _Binding:
    """:func:`use_engine`'s context manager: a class, not ``@contextmanager``, whose
    generator a WebSocket would hold for its whole life (about 0.6 KB a socket)."""

    __slots__ = ("_engine", "_token")

    def __init__(self, engine: Engine[Any]) -> None:
        self._engine = engine
        self._token: Token[Engine[Any] | None] | None = None

    def __enter__(self) -> Engine[Any]:
        self._token = _bound_engine.set(self._engine)
        return self._engine

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _bound_engine.reset(self._token)


def current_engine() -> Engine[Any]:
    """The engine bound by :func:`use_engine` here: the app's, inside its requests and tasks."""
    engine = _bound_engine.get()
    if engine is None:
        raise RuntimeError("no database engine is bound here: run this inside use_engine()")
    return engine


class AppEngine(Engine[Any]):
    """Piccolo's engine for every table (``piccolo_conf.DB``): each call goes to the
    engine bound by :func:`use_engine` where it runs, i.e. the calling app's.

    Piccolo binds a table to one engine for the whole process (``Table._meta.db``,
    found through ``piccolo_conf.py``); routing here lets two apps with two
    databases serve side by side. Outside any app (Piccolo's own CLI) the calls
    go to ``fallback()``, built on first use.
    """

    def __init__(self, fallback: Callable[[], Engine[Any]]) -> None:
        # Engine.__init__ is not called: it would query a database at once.
        self._fallback = fallback
        self._fallback_engine: Engine[Any] | None = None

    def target(self) -> Engine[Any]:
        """The engine the calls made here go to."""
        engine = _bound_engine.get()
        if engine is not None:
            return engine
        if self._fallback_engine is None:
            self._fallback_engine = self._fallback()
        return self._fallback_engine

    # Piccolo reads these attributes of an engine; each is the target's.
    @property
    def engine_type(self) -> str:
        return self.target().engine_type

    @property
    def min_version_number(self) -> float:
        return self.target().min_version_number

    @property
    def log_queries(self) -> bool:
        return self.target().log_queries

    @property
    def log_responses(self) -> bool:
        return self.target().log_responses

    async def get_version(self) -> float:
        return await self.target().get_version()

    def get_version_sync(self) -> float:
        return self.target().get_version_sync()

    async def prep_database(self) -> None:
        await self.target().prep_database()

    async def batch(
        self, query: Query[Any, Any], batch_size: int = 100, node: str | None = None
    ) -> BaseBatch:
        # Piccolo's Engine leaves some parameters and results untyped (here and below).
        return await self.target().batch(query, batch_size, node)  # pyright: ignore[reportUnknownMemberType]

    async def run_querystring(self, querystring: QueryString, in_pool: bool = True) -> Any:
        return await self.target().run_querystring(querystring, in_pool)

    def transform_response_to_dicts(self, results: Any) -> list[dict[str, Any]]:
        return self.target().transform_response_to_dicts(results)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]

    async def run_ddl(self, ddl: str, in_pool: bool = True) -> Any:
        return await self.target().run_ddl(ddl, in_pool)

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        return self.target().transaction(*args, **kwargs)  # pyright: ignore[reportUnknownMemberType]

    def atomic(self) -> BaseAtomic:
        return self.target().atomic()

    async def check_version(self) -> None:
        await self.target().check_version()

    async def start_connection_pool(self, **kwargs: Any) -> None:
        await self.target().start_connection_pool(**kwargs)

    async def close_connection_pool(self) -> None:
        await self.target().close_connection_pool()

    def transaction_exists(self) -> bool:
        return self.target().transaction_exists()

    def get_query_id(self) -> int:
        return self.target().get_query_id()

    def print_query(self, query_id: int, query: str) -> None:
        self.target().print_query(query_id, query)

    def print_response(self, query_id: int, response: list[Any]) -> None:
        self.target().print_response(query_id, response)  # pyright: ignore[reportUnknownMemberType]


@asynccontextmanager
async def connection_pool(engine: Engine[Any]) -> AsyncGenerator[None]:
    """Open the PostgreSQL pool, or SQLite's writer and readers, for the app's lifetime."""
    if isinstance(engine, PostgresEngine):
        # (Piccolo passes **kwargs to asyncpg untyped.)
        await engine.start_connection_pool(min_size=1, max_size=POOL_SIZE, reset=_keep_session)  # pyright: ignore[reportUnknownMemberType]
        try:
            yield
        finally:
            await engine.close_connection_pool()
    elif isinstance(engine, EmbeddedSQLiteEngine):
        async with engine.serve():
            yield
    else:
        yield


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs between two uses, beyond what asyncpg always does
    (roll back a transaction left open, drop listeners): nothing. asyncpg's default
    runs ``RESET ALL; UNLISTEN *; CLOSE ALL`` and an advisory unlock, one more round trip
    for every query outside a transaction, for state chatsvc never leaves on a pooled
    connection: settings are set per transaction (``set_config(..., true)``), LISTEN has
    its own connection (``chatsvc/bus.py``), no advisory locks, cursors close with their
    transaction (docs/performance.md, "Per-reply costs")."""


PING_SECONDS = 3.0

#: PostgreSQL errors that mean "too busy right now": a lock waited on past ``lock_timeout``.
_BUSY = (asyncpg.LockNotAvailableError,)


@asynccontextmanager
async def write_transaction(engine: Engine[Any], *, urgent: bool = False) -> AsyncGenerator[None]:
    """A transaction that an abort or a shutdown cannot cut in half.

    On the embedded SQLite it is a turn of the one writer (``chatsvc/sqlite.py``).
    On PostgreSQL, cancelling a Piccolo transaction through anyio leaks its pool
    connection (docs/architecture.md), so the whole transaction runs in a
    shielded scope; lock waits end at ``lock_timeout`` on the server, and the
    deadline here (twice that) is a last resort. Either way a write that could
    not be done in time raises :class:`Overloaded`, which may be retried. An
    ``urgent`` write (a reply's end) goes before the others queued on SQLite; on
    PostgreSQL it is the only kind that may take the pool's last ``URGENT_RESERVE``
    connections (the others wait for one of ``engine.writers`` first).

    The deadline never cuts the COMMIT: a COMMIT cancelled in flight may land all the
    same, and its caller, told the write failed, would leave what it wrote behind
    (a send refused as ``overloaded`` whose reply stays ``streaming``, its chat busy).
    Waiting for a pool connection is not under it either: each holder's body is.
    """
    if isinstance(engine, EmbeddedSQLiteEngine):
        async with engine.write_turn(urgent=urgent):
            yield
        return
    seconds = WRITE_SECONDS
    turn: AbstractAsyncContextManager[Any] = nullcontext()
    if isinstance(engine, ServerPostgresEngine):
        seconds = engine.write_seconds
        # A transaction nested in one already open runs on its connection: no second turn.
        if not urgent and engine.current_transaction.get() is None:
            turn = engine.writers
    try:
        async with turn:
            with anyio.CancelScope(shield=True):
                async with engine.transaction():  # pyright: ignore[reportUnknownMemberType] (Piccolo's *args)
                    # The deadline cuts the body only. Piccolo's ROLLBACK, the connection's
                    # release and the reset of its current transaction then run uncancelled:
                    # cut by the deadline too, they left the connection out of the pool with
                    # the body's rows uncommitted, and the next write of the same task ran
                    # inside that dead transaction (a send refused as `overloaded`, then
                    # `busy`).
                    with anyio.fail_after(2 * seconds):
                        yield
    except (TimeoutError, *_BUSY) as exc:
        raise Overloaded() from exc


_LOCK_USER = "SELECT id FROM piccolo_user WHERE id = {} FOR UPDATE"


async def lock_user(engine: Engine[Any], owner: int) -> None:
    """Inside a write transaction: the writes of one user that count against one of
    the user's limits (chats, keys, running replies) take their turn, so two of them
    cannot pass the limit together. On PostgreSQL this is the user's row lock, held to
    the end of the transaction; the embedded SQLite has one writer already."""
    if isinstance(engine, PostgresEngine):
        await BaseUser.raw(_LOCK_USER, owner)


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
    async def turn(self, key: object, *, seconds: float) -> AsyncGenerator[None]:
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


#: The cluster's system identifier, the database's oid and the schema its tables are in:
#: a copy of a database made by pg_dump or from a template gets another oid (a physical
#: copy keeps both: docs/scaling.md).
_PG_IDENTITY = (
    "SELECT system_identifier::text || '/' || (SELECT oid FROM pg_database"
    " WHERE datname = current_database())::text || '/' || current_schema() AS identity"
    " FROM pg_control_system()"
)
#: Where the server does not grant ``pg_control_system()`` (or has no such function).
_PG_NAME = "SELECT 'name ' || current_database() || '/' || current_schema() AS identity"


async def identity(engine: Engine[Any]) -> str:
    """What names this database: the same for every process using it, whatever URL
    reaches it, and different for any other database (the event bus's namespace).

    PostgreSQL: its cluster's system identifier, its oid and its schema, or its name
    and schema where the server does not grant ``pg_control_system()``. SQLite: the
    file's device and inode, whatever path or link reaches it.
    """
    if isinstance(engine, PostgresEngine):
        with anyio.fail_after(PING_SECONDS):
            # Piccolo types raw rows as unknown; these have one text column.
            try:
                rows = cast("list[dict[str, str]]", await BaseUser.raw(_PG_IDENTITY))
            except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError):
                rows = cast("list[dict[str, str]]", await BaseUser.raw(_PG_NAME))
        return f"postgresql {rows[0]['identity']}"
    if isinstance(engine, EmbeddedSQLiteEngine):
        return f"sqlite {engine.file_identity()}"
    raise TypeError(f"no identity for {type(engine).__name__}")


async def ping(engine: Engine[Any]) -> None:
    """One real round trip, bounded in time; raises on any database error."""
    with anyio.fail_after(PING_SECONDS):
        await engine.run_ddl("SELECT 1")
