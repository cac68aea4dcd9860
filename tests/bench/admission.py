"""Where the time of admitting a reply goes, when many users send at the same instant.

Run (each takes a few seconds)::

    uv run python tests/bench/admission.py                 # embedded SQLite
    uv run python tests/bench/admission.py --db postgres   # a fresh PostgreSQL database

It calls chatsvc's own store functions in this process, against a freshly
migrated database, with the engine served as the app serves it (SQLite's
writer and readers, or PostgreSQL's pool of 20): ``--sends`` sends (default 200)
of ``--users`` users (default 20), each into a chat of its own, all started at
the same instant. Each send does what ``Launcher.start`` and the reply's
first step do before the upstream is called:

- **exchange**: the transaction that stores the user's message and the empty
  reply (on PostgreSQL it locks the user's row, so one user's sends queue);
- **history**: reading the chat's messages for the prompt;
- **tree**: reading the chat's workspace tree for the prompt.

It prints p50 / p99 / max of each step and of the whole, in ms, per round
(``--rounds``, default 3; each round's replies are finished before the next).
Nothing here talks to an upstream or a socket: ``stream_load.py --burst``
measures the same path end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chatsvc.admission import Admission
from chatsvc.quota_rules import QuotaRule, system_clock
from tests.support import PG_ADMIN_URL

STEPS = ("exchange", "history", "tree", "total")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


async def create_postgres_database() -> tuple[str, str]:
    name = f"chatsvc_bench_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name, f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


async def drop_postgres_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def measure_on(url: str, options: argparse.Namespace) -> None:
    """``measure`` with the tables bound to the database at ``url``."""
    from chatsvc.database import engine_from_url, use_engine

    with use_engine(engine_from_url(url)):
        await measure(options)


async def measure(options: argparse.Namespace) -> None:
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from chatsvc import store
    from chatsvc.database import connection_pool, current_engine
    from chatsvc.errors import Overloaded

    result = await run_forwards("all")
    assert result.success, result.message
    engine = current_engine()
    async with connection_pool(engine):
        users = [
            await store.create_user(f"bench{i}", "not-a-real-hash") for i in range(options.users)
        ]
        await store.register_instance("bench", "here")
        chats = [
            (
                users[i % len(users)],
                (
                    await store.create_chat(
                        users[i % len(users)],
                        title="bench",
                        system_prompt="",
                        model=None,
                        max_chats=1_000_000,
                    )
                ).id,
            )
            for i in range(options.sends)
        ]
        for round_ in range(options.rounds):
            admissions = Round(store, Overloaded, options.no_quota)
            began = time.perf_counter()
            async with anyio.create_task_group() as group:
                for owner, chat_id in chats:
                    group.start_soon(admissions.send, owner, chat_id, options.sends)
            wall = time.perf_counter() - began
            figures = "; ".join(
                f"{step} {percentile(values, 0.5):.1f} / {percentile(values, 0.99):.1f}"
                f" / {max(values) * 1000:.1f}"
                for step, values in admissions.times.items()
                if values
            )
            print(
                f"{options.db} round {round_}: {options.sends} sends of {options.users} users in"
                f" {wall * 1000:.0f} ms, {admissions.refused} refused (overloaded);"
                f" p50 / p99 / max ms: {figures}"
            )
            async with anyio.create_task_group() as group:
                for reply_id, chat_id, owner in admissions.replies:
                    group.start_soon(admissions.finish, reply_id, chat_id, owner)


class Round:
    """One round of simultaneous sends, and what each step took."""

    def __init__(self, store: Any, overloaded: type[Exception], no_quota: bool = False) -> None:
        self.store = store
        self.no_quota = no_quota
        self.overloaded = overloaded
        self.times: dict[str, list[float]] = {step: [] for step in STEPS}
        self.refused = 0
        self.replies: list[tuple[uuid.UUID, uuid.UUID, int]] = []

    async def send(self, owner: int, chat_id: uuid.UUID, cap: int) -> None:
        began = time.perf_counter()
        reply_id = uuid.uuid4()
        try:
            admission = Admission(
                owner=owner,
                task_id=uuid.uuid4(),
                reply_id=reply_id,
                instance="bench",
                live_after=self.store.now().replace(year=2000),
                per_user_cap=cap,
                default_model="bench-model",
                offered_models=frozenset({"bench-model"}),
                # As the launcher admits: the token budgets are read whether set or not.
                quota=None
                if self.no_quota
                else QuotaRule(daily=None, chat=None, now=system_clock()),
            )
            stored_exchange = await self.store.create_exchange(
                admission,
                chat_id=chat_id,
                new_chat_title="bench",
                user_content="hello " * 20,
                max_chats=1_000_000,
            )
        except self.overloaded:
            self.refused += 1
            return
        stored = time.perf_counter()
        assert stored_exchange is not None
        question = stored_exchange.question.id
        await self.store.prompt_history(chat_id, leaf=question, budget=32_000)
        read = time.perf_counter()
        await self.store.get_tree(chat_id)
        done = time.perf_counter()
        self.replies.append((reply_id, chat_id, owner))
        self.times["exchange"].append(stored - began)
        self.times["history"].append(read - stored)
        self.times["tree"].append(done - read)
        self.times["total"].append(done - began)

    async def finish(self, reply_id: uuid.UUID, chat_id: uuid.UUID, owner: int) -> None:
        # With usage, as a model server reports it: the day's tokens grow round by round.
        await self.store.finish_reply(
            reply_id,
            chat_id,
            owner=owner,
            status="complete",
            content="bench reply",
            prompt_tokens=120,
            completion_tokens=30,
            finish_reason="stop",
            error_code=None,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--sends", type=int, default=200, help="sends started at once")
    parser.add_argument("--users", type=int, default=20, help="users the sends share")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-quota", action="store_true", help="admit without reading the token budgets"
    )
    options = parser.parse_args()
    postgres_name = None
    if options.db == "postgres":
        postgres_name, url = asyncio.run(create_postgres_database())
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='chatsvc-bench-')}/bench.db"
    os.environ.setdefault("PICCOLO_CONF", "piccolo_conf")
    try:
        asyncio.run(measure_on(url, options))
    finally:
        if postgres_name is not None:
            asyncio.run(drop_postgres_database(postgres_name))


if __name__ == "__main__":
    main()
