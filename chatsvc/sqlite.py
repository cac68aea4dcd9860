"""Embedded SQLite that holds bursts: one writer connection fed in FIFO order, reused readers.

Piccolo's ``SQLiteEngine`` opens a new connection (and an aiosqlite thread)
for every query and transaction, so concurrent writers of one process meet
inside SQLite's busy handler, which sleeps and retries in no particular order:
under a burst some writers wait past any deadline (docs/architecture.md,
"Embedded SQLite"). This engine keeps Piccolo's tables, queries and
transactions, and changes only where a statement runs:

- **Writes** (every transaction, and every statement that is not a read: a
  ``SELECT``, or a ``WITH`` query that only selects) run on one long-lived
  writer connection, one turn at a time, in the order they asked.
  ``BEGIN IMMEDIATE`` is only ever issued by the writer, so no two writers
  of this process wait on each other inside SQLite. The
  writer's statements run right on the event loop's thread: a local SQLite
  statement takes microseconds, less than handing it to a thread and back
  (aiosqlite's way), and a turn then runs without waiting in the loop's queue
  between its statements. What could block is kept off the loop: ``COMMIT``
  (it may sync the disk) runs in a worker thread, and ``BEGIN`` never waits
  for another process's lock inside SQLite (the writer asks again, sleeping
  asynchronously in between).
- **Group commit**: the turns queued while a transaction is open join it, each
  inside its own ``SAVEPOINT`` (one turn's error undoes only that turn), and
  one ``COMMIT`` makes them all durable. A turn returns once its batch is
  committed, so what it wrote is visible to every reader.
- **Reads** outside a transaction go to a few reused connections; WAL keeps
  them concurrent with the writer.
- **Deadlines**: a turn that has not started within ``write_seconds`` is
  dropped before it touched anything and raises :class:`Overloaded` (a
  retryable refusal). A turn that has started runs to its end, shielded from
  cancellation: nothing is ever half written.

Until :meth:`serve` is entered (migrations, the command line), the engine is
Piccolo's own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

import aiosqlite
import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from piccolo.engine.sqlite import (
    SQLiteEngine,
    SQLiteTransaction,
    TransactionType,
    dict_factory,  # pyright: ignore[reportUnknownVariableType]
)
from piccolo.querystring import QueryString

from chatsvc.errors import Overloaded

log = logging.getLogger("chatsvc.database")

#: Readers kept open; each is one aiosqlite thread.
READERS = 4
#: A batch commits after this many turns or this many seconds, whichever comes first,
#: so the first turn of a long queue does not wait for the whole queue.
BATCH_TURNS = 64
BATCH_SECONDS = 0.01
#: While another process holds the write lock, the writer asks for it again this often.
BUSY_PAUSE = 0.02


class _State(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    ABANDONED = "abandoned"


@dataclass(eq=False)
class _Turn:
    """One transaction's turn on the writer connection."""

    urgent: bool = False  # taken before every turn that is not
    state: _State = _State.QUEUED
    handed: anyio.Event = field(default_factory=anyio.Event)  # the body may run now
    released: anyio.Event = field(default_factory=anyio.Event)  # the body has ended
    failed: bool = False  # the body raised: its savepoint is rolled back
    done: anyio.Event = field(default_factory=anyio.Event)  # its batch is committed (or not)
    error: BaseException | None = None


class _InlineConnection:
    """The writer's ``sqlite3`` connection, run on the event loop's thread, with the
    (awaitable) methods Piccolo's transactions call on an aiosqlite connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.sqlite = connection

    def run(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.sqlite.execute(sql, args)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    async def execute_fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.run(sql, args)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.run(sql, args)


class _WriterTransaction(SQLiteTransaction):
    """What Piccolo sees as the current transaction during a turn: the writer's connection."""

    __slots__ = ()

    def __init__(self, engine: EmbeddedSQLiteEngine, connection: _InlineConnection) -> None:
        super().__init__(engine, TransactionType.immediate)
        self.connection = connection

    async def commit(self) -> None:
        raise RuntimeError("a writer turn commits with its batch")

    async def rollback(self) -> None:
        raise RuntimeError("a writer turn is rolled back by raising from its body")


class EmbeddedSQLiteEngine(SQLiteEngine):
    """Piccolo's SQLite engine with one FIFO writer, group commit and reused readers."""

    __slots__ = ("_idle_readers", "_reader_slots", "_sender", "_writer", "write_seconds")

    def __init__(self, path: str, *, write_seconds: float) -> None:
        # Before `serve` (migrations, the command line) Piccolo's own connections wait
        # this long for another process's lock; the writer's own wait is much shorter.
        # (Piccolo leaves its **connection_kwargs untyped.)
        super().__init__(path=path, timeout=30)  # pyright: ignore[reportUnknownMemberType]
        self.write_seconds = write_seconds
        self._writer: _InlineConnection | None = None
        self._sender: MemoryObjectSendStream[_Turn] | None = None
        self._idle_readers: list[aiosqlite.Connection] = []
        self._reader_slots = anyio.Semaphore(READERS, fast_acquire=True)

    # --- lifetime ---------------------------------------------------------------------------

    @asynccontextmanager
    async def serve(self) -> AsyncGenerator[None]:
        """Open the writer and the readers, and run the writer's loop, for the app's lifetime."""
        await self.run_ddl("PRAGMA journal_mode=WAL")  # sticks to the file
        kwargs: dict[str, Any] = {**self._connection_kwargs(), "check_same_thread": False}
        writer = _InlineConnection(sqlite3.connect(**kwargs))
        writer.sqlite.row_factory = dict_factory
        writer.run("PRAGMA foreign_keys = 1")
        writer.run("PRAGMA busy_timeout = 0")  # never wait inside SQLite on the loop's thread
        readers = [await self._connect() for _ in range(READERS)]
        turns_in, turns_out = anyio.create_memory_object_stream[_Turn](math.inf)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._write_loop, writer, turns_out, name="sqlite writer")
                self._writer, self._sender, self._idle_readers = writer, turns_in, list(readers)
                try:
                    yield
                finally:
                    self._writer = self._sender = None
                    turns_in.close()  # the loop ends once the queued turns are done
        finally:
            with anyio.CancelScope(shield=True):
                writer.sqlite.close()
                for connection in readers:
                    await connection.close()

    async def _connect(self) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(**self._connection_kwargs())
        # aiosqlite types row_factory as a class; sqlite3 takes any callable (as Piccolo does).
        connection.row_factory = dict_factory  # pyright: ignore[reportAttributeAccessIssue]
        await connection.execute("PRAGMA foreign_keys = 1")
        await connection.execute("PRAGMA query_only = 1")  # readers never write (_is_read)
        return connection

    def file_identity(self) -> str:
        """The database file's device and inode: the same whatever path or link reaches it."""
        found = os.stat(self._connection_kwargs()["database"])
        return f"{found.st_dev}/{found.st_ino}"

    def _connection_kwargs(self) -> dict[str, Any]:
        """Piccolo's arguments for a connection (its path may be set after construction)."""
        return self.connection_kwargs  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]

    # --- Piccolo's entry points -----------------------------------------------------------------

    # Piccolo's engines return their rows untyped.

    async def run_querystring(self, querystring: QueryString, in_pool: bool = False) -> Any:
        if self._sender is None:
            return await super().run_querystring(querystring, in_pool)  # pyright: ignore[reportUnknownVariableType]
        sql, args = querystring.compile_string(engine_type=self.engine_type)
        return await self._run(sql, args)

    async def run_ddl(self, ddl: str, in_pool: bool = False) -> Any:
        if self._sender is None:
            return await super().run_ddl(ddl, in_pool)  # pyright: ignore[reportUnknownVariableType]
        return await self._run(ddl, [])

    def transaction(
        self,
        transaction_type: TransactionType = TransactionType.deferred,
        allow_nested: bool = True,
    ) -> Any:
        """While serving, every transaction is a writer turn (whatever its type)."""
        if self._sender is None:
            return super().transaction(transaction_type, allow_nested)
        return self.write_turn()

    # --- reads and writes ------------------------------------------------------------------------

    async def _run(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        current = self.current_transaction.get()
        if current is not None:
            return await _fetch_all(current.connection, sql, args)
        if _is_read(sql):
            return await self._read(sql, args)
        async with self.write_turn():
            current = self.current_transaction.get()
            assert current is not None
            return await _fetch_all(current.connection, sql, args)

    async def _read(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        async with self._reader_slots:
            connection = self._idle_readers.pop()
            try:
                # One call into the connection's thread: the cursor never outlives it.
                return await _fetch_all(connection, sql, args)
            finally:
                self._idle_readers.append(connection)

    @asynccontextmanager
    async def write_turn(self, *, urgent: bool = False) -> AsyncGenerator[None]:
        """Run the body as one transaction on the writer, in FIFO order with every other;
        an ``urgent`` turn (a reply's end, which a client waits for) goes before the rest.

        Raises :class:`Overloaded` when the turn could not start within
        ``write_seconds`` (nothing was written). Once started, the body and the
        commit are shielded from cancellation. Nested turns join the outer one.
        """
        if self.current_transaction.get() is not None:
            yield
            return
        sender, writer = self._sender, self._writer
        if sender is None or writer is None:
            async with super().transaction(TransactionType.immediate):
                yield
            return
        turn = _Turn(urgent=urgent)
        with anyio.CancelScope(shield=True):
            sender.send_nowait(turn)
            with anyio.move_on_after(self.write_seconds):
                await turn.handed.wait()
            if turn.error is not None:
                raise turn.error
            if turn.state is _State.QUEUED:
                turn.state = _State.ABANDONED
                raise Overloaded()
            token = self.current_transaction.set(_WriterTransaction(self, writer))
            try:
                yield
            except BaseException:
                turn.failed = True
                raise
            finally:
                self.current_transaction.reset(token)
                turn.released.set()
            await turn.done.wait()
            if turn.error is not None:
                raise turn.error

    async def _write_loop(
        self, writer: _InlineConnection, turns: MemoryObjectReceiveStream[_Turn]
    ) -> None:
        """Take turns in order; the turns queued behind an open transaction join it."""
        waiting = _Waiting(turns)
        async with turns:
            while True:
                if not waiting.pending() and not await waiting.wait():
                    return  # closed, and every turn taken
                batch: list[_Turn] = []
                # A batch is never cut in half: its turns' bodies are shielded too.
                with anyio.CancelScope(shield=True):
                    try:
                        await self._run_batch(writer, batch, waiting)
                    except sqlite3.Error as exc:  # the writer's error boundary: fail the batch
                        log.error("database: %d writes failed: %s", len(batch), exc)
                        _rollback(writer)
                        _fail(batch, exc)

    async def _run_batch(
        self, writer: _InlineConnection, batch: list[_Turn], waiting: _Waiting
    ) -> None:
        """One transaction: the turns waiting, in order, while the batch is young and small."""
        if not await self._begin(writer, waiting):
            return
        started = anyio.current_time()
        while len(batch) < BATCH_TURNS and (turn := waiting.next()) is not None:
            batch.append(turn)
            await self._take(writer, turn)
            if anyio.current_time() - started > BATCH_SECONDS:
                break
        # COMMIT may sync the disk, and checkpoint the WAL: in a worker thread, not on the loop.
        await anyio.to_thread.run_sync(writer.run, "COMMIT")
        for turn in batch:
            turn.done.set()

    async def _begin(self, writer: _InlineConnection, waiting: _Waiting) -> bool:
        """``BEGIN IMMEDIATE``; while another process holds the lock, try again as long as
        some turn still wants it. ``False`` when none does any more."""
        warned = False
        while waiting.pending():
            try:
                writer.run("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            if not warned:
                log.warning(
                    "database: another process holds the write lock; %d writes wait",
                    len(waiting),
                )
                warned = True
            await anyio.sleep(BUSY_PAUSE)
        return False

    async def _take(self, writer: _InlineConnection, turn: _Turn) -> None:
        """One turn inside the open transaction, in a savepoint of its own.

        The savepoints are never released one by one: ``ROLLBACK TO turn`` goes
        back to the newest one of that name (this turn's start), and ``COMMIT``
        ends them all, so a turn costs one statement less.
        """
        writer.run("SAVEPOINT turn")
        turn.state = _State.RUNNING
        turn.handed.set()
        await turn.released.wait()
        if turn.failed:
            writer.run("ROLLBACK TO turn")


def _rollback(writer: _InlineConnection) -> None:
    with contextlib.suppress(sqlite3.Error):  # no transaction was open
        writer.run("ROLLBACK")


#: A statement that changes the database, wherever it stands in a ``WITH`` query.
_WRITING = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|UPSERT|CREATE|DROP|ALTER)\b", re.IGNORECASE)


def _is_read(sql: str) -> bool:
    """A ``SELECT``, or a ``WITH`` query (recursive history walks, search) that selects:
    it goes to a reader, not into the writer's queue. A reader is ``query_only``, so a
    statement taken for a read by mistake fails rather than writes outside the writer."""
    head = sql.lstrip()[:6].upper()
    if head == "SELECT":
        return True
    return head[:4] == "WITH" and head[4:5].isspace() and not _WRITING.search(sql)


class _Waiting:
    """The turns not taken yet: urgent ones (a reply's end) first, each lane in FIFO order."""

    def __init__(self, turns: MemoryObjectReceiveStream[_Turn]) -> None:
        self._turns = turns
        self._urgent: deque[_Turn] = deque()
        self._normal: deque[_Turn] = deque()

    def _pull(self) -> None:
        """Sort every turn queued right now into its lane; forget the abandoned ones."""
        while True:
            try:
                turn = self._turns.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            self._add(turn)
        for lane in (self._urgent, self._normal):
            while lane and lane[0].state is not _State.QUEUED:
                lane.popleft()

    def _add(self, turn: _Turn) -> None:
        (self._urgent if turn.urgent else self._normal).append(turn)

    def pending(self) -> bool:
        """Whether a turn still wants the writer (taking in what was queued meanwhile)."""
        self._pull()
        return bool(self._urgent or self._normal)

    def __len__(self) -> int:
        return len(self._urgent) + len(self._normal)

    async def wait(self) -> bool:
        """Until a turn is queued; ``False`` once the queue is closed."""
        try:
            self._add(await self._turns.receive())
        except anyio.EndOfStream:
            return False
        return True

    def next(self) -> _Turn | None:
        if not self.pending():
            return None
        return (self._urgent or self._normal).popleft()


def _fail(batch: list[_Turn], exc: BaseException) -> None:
    for turn in batch:
        if turn.state is _State.QUEUED:
            turn.state = _State.ABANDONED
        turn.error = exc
        turn.handed.set()
        turn.done.set()


async def _fetch_all(
    connection: aiosqlite.Connection, sql: str, args: list[Any]
) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts: every connection's row factory is Piccolo's ``dict_factory``
    (aiosqlite types them as ``Row``)."""
    return cast("list[dict[str, Any]]", await connection.execute_fetchall(sql, args))
