"""PostgreSQL's write transactions (``chatsvc/database.py``), on a real database.

Ordinary write transactions take at most ``POOL_SIZE - URGENT_RESERVE`` of the pool's
connections at once; a reply's end (``urgent``) may take the rest, so it is stored while
a burst of sends holds the others (docs/performance.md, "The socket writer and the
upstream request"). Like tests/test_sqlite_writer.py, these run the engine itself, as
the app serves it: which write waits for which cannot be forced through the API.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from chatsvc.database import (
    POOL_SIZE,
    URGENT_RESERVE,
    ServerPostgresEngine,
    connection_pool,
    engine_from_url,
    write_transaction,
)
from tests.support import Database

pytestmark = pytest.mark.postgres_only


async def test_a_reply_end_is_stored_while_a_burst_of_writes_holds_every_ordinary_turn(
    engine: str, make_database: Callable[..., Database]
) -> None:
    postgres = engine_from_url(make_database(engine).url, write_seconds=5)
    assert isinstance(postgres, ServerPostgresEngine)
    hold = anyio.Event()
    begun: list[str] = []
    turns_taken = anyio.Event()
    ended = anyio.Event()

    async def write(name: str, *, urgent: bool = False) -> None:
        async with write_transaction(postgres, urgent=urgent):
            begun.append(name)
            if len(begun) == POOL_SIZE - URGENT_RESERVE:
                turns_taken.set()
            await postgres.run_ddl(f"INSERT INTO item (name) VALUES ('{name}')")
            if not urgent:
                await hold.wait()  # a send's transaction, slow under the burst

    async def end_of_reply() -> None:
        await write("end", urgent=True)
        ended.set()

    async with connection_pool(postgres):
        await postgres.run_ddl("CREATE TABLE item (name TEXT NOT NULL)")
        async with anyio.create_task_group() as group:
            for number in range(POOL_SIZE):  # as many as the pool has connections
                group.start_soon(write, f"send {number}")
            with anyio.fail_after(10):
                await turns_taken.wait()
            await anyio.sleep(0.3)  # time for any other send to begin, were it allowed
            ordinary_at_once = len(begun)
            group.start_soon(end_of_reply)
            with anyio.move_on_after(5):
                await ended.wait()
            stored_during_burst = ended.is_set()
            hold.set()  # whatever happened, let every transaction end
        rows = await postgres.run_ddl("SELECT name FROM item")

    assert ordinary_at_once == POOL_SIZE - URGENT_RESERVE
    assert stored_during_burst, "the reply's end waited for the burst's transactions"
    assert sorted(row["name"] for row in rows) == sorted(
        ["end", *(f"send {number}" for number in range(POOL_SIZE))]
    )


async def test_a_transaction_inside_another_takes_no_second_turn(
    engine: str, make_database: Callable[..., Database]
) -> None:
    """Every ordinary turn held, each by a transaction that opens a nested one: the nested
    ones run on their transaction's connection and need no turn of their own (a second
    turn would wait for the others forever)."""
    postgres = engine_from_url(make_database(engine).url, write_seconds=5)
    assert isinstance(postgres, ServerPostgresEngine)
    inner_done: list[int] = []

    async def nested(number: int) -> None:
        async with write_transaction(postgres):
            await anyio.sleep(0.1)  # every turn is taken before any inner one starts
            async with write_transaction(postgres):
                await postgres.run_ddl(f"INSERT INTO item (name) VALUES ('inner {number}')")
            inner_done.append(number)

    async with connection_pool(postgres):
        await postgres.run_ddl("CREATE TABLE item (name TEXT NOT NULL)")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for number in range(POOL_SIZE - URGENT_RESERVE):
                    group.start_soon(nested, number)
    assert sorted(inner_done) == list(range(POOL_SIZE - URGENT_RESERVE))
