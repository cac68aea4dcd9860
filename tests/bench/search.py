"""How long ``GET /api/search`` takes over 100,000 messages (issue 17), per engine.

Run: ``uv run python tests/bench/search.py [--engine sqlite|postgres|both] [--messages
100000] [--queries 400]`` (PostgreSQL at ``CHATSVC_TEST_POSTGRES_URL``, as the tests).
For each engine: a fresh migrated database, a real server, 5 users who log in and 20
more stored directly; the messages (20-60 words from a 5,000-word vocabulary, Zipf
distributed, so some words are in most messages and some in a few) are bulk inserted
behind the server's back over 1,000 chats of those 25 users: the database indexes them
itself (SQLite's triggers, PostgreSQL's generated columns), which the fill time includes.
Then a mix of queries (a common word, a middling one, a rare one, two words, a phrase,
``or``, an excluded word) from the 5 users, one at a time over HTTP; the report gives the
fill time and p50/p95/p99 of the request time, in all and per kind of query.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import Database, register_and_login, run_async, start_server
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_databases,
    migrate_database,
)

USERS, OTHERS, CHATS, VOCABULARY = 5, 20, 1000, 5000
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))))
    return sorted(words, key=lambda _: rng.random())


def texts(rng: random.Random, words: list[str], count: int) -> list[str]:
    weights = [1 / (rank + 1) for rank in range(len(words))]
    pool = rng.choices(words, weights=weights, k=count * 40)
    out, at = [], 0
    for _ in range(count):
        length = rng.randint(20, 60)
        out.append(" ".join(pool[at % len(pool) : at % len(pool) + length]) or words[0])
        at += length
    return out


def fill(db: Database, owners: list[int], messages: int, rng: random.Random) -> float:
    """Bulk insert the chats and messages; the seconds it took (indexing included)."""
    words = vocabulary(rng)
    contents = texts(rng, words, messages)
    start = datetime.now(UTC) - timedelta(days=30)
    chats = [(uuid.uuid4(), owners[i % len(owners)]) for i in range(CHATS)]
    chat_rows = [
        (cid, owner, " ".join(rng.choices(words[:500], k=3)), start, start) for cid, owner in chats
    ]
    message_rows = []
    parents: dict[uuid.UUID, uuid.UUID | None] = {cid: None for cid, _ in chats}
    for index, content in enumerate(contents):
        cid = chats[index % CHATS][0]
        mid = uuid.uuid4()
        role = "user" if (index // CHATS) % 2 == 0 else "assistant"
        stamp = start + timedelta(seconds=index)
        message_rows.append((mid, cid, parents[cid], role, content, "complete", stamp))
        parents[cid] = mid
    began = time.perf_counter()
    if db.engine == "sqlite":
        import sqlite3

        connection = sqlite3.connect(db.url.removeprefix("sqlite:///"))
        with connection:
            connection.executemany(
                "INSERT INTO chat (id, owner, title, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(str(c), o, t, str(a), str(b)) for c, o, t, a, b in chat_rows],
            )
            connection.executemany(
                "INSERT INTO message (id, chat, parent, role, content, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (str(m), str(c), str(p) if p else None, r, t, s, str(d))
                    for m, c, p, r, t, s, d in message_rows
                ],
            )
        connection.close()
    else:

        async def copy() -> None:
            connection = await asyncpg.connect(db.url)
            try:
                await connection.copy_records_to_table(
                    "chat",
                    records=chat_rows,
                    columns=["id", "owner", "title", "created_at", "updated_at"],
                )
                await connection.copy_records_to_table(
                    "message",
                    records=message_rows,
                    columns=["id", "chat", "parent", "role", "content", "status", "created_at"],
                )
                await connection.execute("ANALYZE chat; ANALYZE message")
            finally:
                await connection.close()

        run_async(copy())
    return time.perf_counter() - began


def queries(rng: random.Random, db: Database, count: int) -> list[tuple[str, str]]:
    """``count`` (kind, q) pairs, with words taken from the stored text."""
    sample = [r["content"] for r in db.query("SELECT content FROM message LIMIT 2000")]
    counts: dict[str, int] = defaultdict(int)
    for text in sample:
        for word in text.split():
            counts[word] += 1
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)
    common, middling, rare = ranked[:10], ranked[100:400], ranked[-500:]
    kinds = {
        "common word": lambda: rng.choice(common),
        "middling word": lambda: rng.choice(middling),
        "rare word": lambda: rng.choice(rare),
        "two words": lambda: f"{rng.choice(middling)} {rng.choice(ranked[:100])}",
        "phrase": lambda: '"{}"'.format(" ".join(rng.choice(sample).split()[3:5])),
        "or": lambda: f"{rng.choice(rare)} or {rng.choice(middling)}",
        "excluded": lambda: f"{rng.choice(middling)} -{rng.choice(common)}",
    }
    names = list(kinds)
    return [(name, kinds[name]()) for name in (names[i % len(names)] for i in range(count))]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(engine: str, messages: int, count: int) -> None:
    rng = random.Random(17)
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "sqlite":
            db = Database("sqlite", f"sqlite:///{tmp}/bench.db")
        else:
            db = Database("postgres", run_async(create_postgres_database()))
        try:
            migrate_database(db)
            server = start_server(db, Path(tmp), fresh_interpreter=True)
            try:
                users = [register_and_login(server) for _ in range(USERS)]
                for number in range(OTHERS):
                    name = f"other{number}_{uuid.uuid4().hex[:6]}"
                    db.query(
                        "INSERT INTO piccolo_user (username, password, first_name, last_name, "
                        "email, active, admin, superuser) VALUES (?, 'x', '', '', ?, ?, ?, ?)",
                        name,
                        f"{name}@example.com",
                        True,
                        False,
                        False,
                    )
                owners = [r["id"] for r in db.query("SELECT id FROM piccolo_user ORDER BY id")]
                seconds = fill(db, owners, messages, rng)
                print(f"{engine}: {messages:,} messages in {CHATS:,} chats of {len(owners)} users")
                print(f"  fill (bulk insert, indexed by the database): {seconds:.1f} s")
                by_kind: dict[str, list[float]] = defaultdict(list)
                hits: dict[str, list[int]] = defaultdict(list)
                clients = [user.client() for user in users]
                try:
                    for client in clients:  # connections warm, caches as in use
                        client.get("/api/search", params={"q": "warm"}).raise_for_status()
                    for index, (kind, q) in enumerate(queries(rng, db, count)):
                        client = clients[index % len(clients)]
                        began = time.perf_counter()
                        response = client.get("/api/search", params={"q": q, "limit": 20})
                        elapsed = (time.perf_counter() - began) * 1000
                        if response.status_code != 200:
                            raise SystemExit(f"{q!r}: {response.status_code} {response.text}")
                        by_kind[kind].append(elapsed)
                        hits[kind].append(len(response.json()["items"]))
                finally:
                    for client in clients:
                        client.close()
            finally:
                server.stop()
        finally:
            if engine == "postgres":
                run_async(drop_postgres_databases([db.url]))
    every = [ms for values in by_kind.values() for ms in values]
    line = "  {:<14} n={:<4} p50 {:6.1f} ms  p95 {:6.1f} ms  p99 {:6.1f} ms  hits/page {:4.1f}"
    print(
        line.format(
            "all",
            len(every),
            percentile(every, 0.5),
            percentile(every, 0.95),
            percentile(every, 0.99),
            statistics.mean(n for values in hits.values() for n in values),
        )
    )
    for kind, values in by_kind.items():
        print(
            line.format(
                kind,
                len(values),
                percentile(values, 0.5),
                percentile(values, 0.95),
                percentile(values, 0.99),
                statistics.mean(hits[kind]),
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=420)
    options = parser.parse_args()
    for engine in ("sqlite", "postgres") if options.engine == "both" else (options.engine,):
        run(engine, options.messages, options.queries)


if __name__ == "__main__":
    main()
