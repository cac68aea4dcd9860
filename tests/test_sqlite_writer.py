"""The embedded SQLite's one writer (chatsvc/sqlite.py), on a real database file.

These run the engine itself, as the app serves it, outside a server: what they
check (which write lands, in which order, when it is visible) cannot be forced
through the API. SQLite only: PostgreSQL has no such writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from chatsvc.errors import Overloaded
from chatsvc.sqlite import EmbeddedSQLiteEngine


class Refused(Exception):
    pass


def _engine(tmp_path: Path, write_seconds: float = 5.0) -> EmbeddedSQLiteEngine:
    path = tmp_path / "writer.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE item (name TEXT NOT NULL)")
    return EmbeddedSQLiteEngine(str(path), write_seconds=write_seconds)


def _names(engine: EmbeddedSQLiteEngine) -> list[str]:
    """What another connection sees, in insertion order."""
    with sqlite3.connect(engine.path) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM item ORDER BY rowid")]


async def test_a_failing_write_undoes_only_itself_and_every_write_is_visible_when_it_returns(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)
    seen_at_return: dict[str, bool] = {}

    async def write(name: str, fail: bool) -> None:
        try:
            async with engine.write_turn():
                await engine.run_ddl(f"INSERT INTO item (name) VALUES ('{name}')")
                if fail:
                    raise Refused(name)
        except Refused:
            return
        seen_at_return[name] = name in _names(engine)

    async with engine.serve(), anyio.create_task_group() as group:
        for i in range(60):
            group.start_soon(write, f"w{i}", i % 5 == 0)

    kept = [f"w{i}" for i in range(60) if i % 5]
    assert sorted(_names(engine)) == sorted(kept)  # the failed ones left nothing
    assert seen_at_return == dict.fromkeys(kept, True)  # committed before returning


async def test_writes_land_in_the_order_they_asked_and_a_reply_end_goes_first(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)
    hold = anyio.Event()

    async def write(name: str, *, urgent: bool = False) -> None:
        async with engine.write_turn(urgent=urgent):
            await engine.run_ddl(f"INSERT INTO item (name) VALUES ('{name}')")
            if name == "first":
                await hold.wait()  # keeps the writer busy while the others queue

    async with engine.serve(), anyio.create_task_group() as group:
        group.start_soon(write, "first")
        await anyio.sleep(0.05)
        for i in range(5):
            group.start_soon(write, f"n{i}")
            await anyio.sleep(0.01)
        group.start_soon(lambda: write("end", urgent=True))
        await anyio.sleep(0.05)
        hold.set()

    assert _names(engine) == ["first", "end", "n0", "n1", "n2", "n3", "n4"]


async def test_a_write_that_cannot_start_in_time_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path, write_seconds=0.3)
    outcome: list[str] = []

    async with engine.serve():
        blocker = sqlite3.connect(engine.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process's write lock
        try:
            async with engine.write_turn():
                await engine.run_ddl("INSERT INTO item (name) VALUES ('late')")
        except Overloaded as exc:
            outcome.append(exc.code)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        async with engine.write_turn():  # the writer goes on once the lock is gone
            await engine.run_ddl("INSERT INTO item (name) VALUES ('after')")

    assert outcome == ["overloaded"]
    assert _names(engine) == ["after"]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1",
        "select name from item",
        # A recursive walk (the prompt's history) and a CTE (search) are reads too: queued
        # behind the writer they waited on every write, and were refused under a burst.
        "WITH RECURSIVE up(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM up WHERE n < 3) "
        "SELECT count(*) AS n FROM up",
        "with named(updated_at) as (select name from item) select * from named",
    ],
)
async def test_reads_do_not_queue_behind_the_writer(tmp_path: Path, statement: str) -> None:
    engine = _engine(tmp_path)
    read_while_held: list[object] = []
    hold = anyio.Event()

    async def hold_writer() -> None:
        async with engine.write_turn():
            await engine.run_ddl("INSERT INTO item (name) VALUES ('held')")
            await hold.wait()

    async with engine.serve(), anyio.create_task_group() as group:
        group.start_soon(hold_writer)
        await anyio.sleep(0.05)
        with anyio.fail_after(2):
            read_while_held.append(await engine.run_ddl(statement))
        hold.set()

    assert len(read_while_held) == 1  # answered while a write was open (it sees none of it)
    assert read_while_held[0] in ([{"1": 1}], [], [{"n": 3}])


async def test_a_with_query_that_writes_goes_to_the_writer(tmp_path: Path) -> None:
    """A ``WITH`` that inserts is a write: it lands through the writer (the readers are
    ``query_only``: taken for a read, it would have failed)."""
    engine = _engine(tmp_path)
    async with engine.serve():
        await engine.run_ddl(
            "WITH picked(name) AS (SELECT 'from a cte') "
            "INSERT INTO item (name) SELECT name FROM picked"
        )

    assert _names(engine) == ["from a cte"]
