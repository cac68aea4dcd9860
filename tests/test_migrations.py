"""The migrations in ``migrations/`` build exactly the tables ``chatsvc.tables`` defines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chatsvc.piccolo_app import APP_CONFIG
from chatsvc.tables import COMPOSITE_INDEXES
from tests.support import Database, clean_environment, run_chatsvc

TABLES = (
    "chat",
    "message",
    "token_version",
    "refresh_token",
    "user_quota",
    "api_key",
    "chat_share",
    "message_feedback",
    "daily_spend",
)

#: The full-text search objects (issue 17) are no Piccolo columns: the tables made from their
#: definitions get them from the search migration's own ``create``, so both schemas compared
#: hold them and the check still finds any other difference.
SEARCH_MIGRATION = (
    Path(__file__).resolve().parent.parent / "migrations/chatsvc_2026_12_06t20_30_00_000000.py"
)

CREATE_FROM_DEFINITIONS = f"""
import asyncio
import importlib.util
from piccolo.apps.user.tables import BaseUser
from piccolo.table import create_db_tables
from chatsvc.tables import (
    ApiKey, Chat, ChatShare, DailySpend, Message, MessageFeedback, RefreshToken, TokenVersion,
    UserQuota,
)
spec = importlib.util.spec_from_file_location("search_migration", {str(SEARCH_MIGRATION)!r})
search = importlib.util.module_from_spec(spec)
spec.loader.exec_module(search)
async def main():
    await create_db_tables(
        BaseUser, Chat, Message, TokenVersion, RefreshToken, UserQuota, ApiKey, ChatShare,
        MessageFeedback, DailySpend,
    )
    await search.create()
asyncio.run(main())
"""


def _schema(db: Database) -> dict[str, dict]:
    """Columns, indexes and foreign keys of our tables, in a comparable form."""
    schema: dict[str, dict] = {}
    for table in TABLES:
        if db.engine == "sqlite":
            columns = {
                r["name"]: (r["type"].upper(), bool(r["notnull"]), r["dflt_value"], bool(r["pk"]))
                for r in db.query(f"PRAGMA table_info({table})")
            }
            indexes = {
                r["name"]: tuple(i["name"] for i in db.query(f"PRAGMA index_info({r['name']})"))
                for r in db.query(f"PRAGMA index_list({table})")
                if r["origin"] == "c"
            }
            foreign = {
                (r["from"], r["table"], r["on_delete"])
                for r in db.query(f"PRAGMA foreign_key_list({table})")
            }
        else:
            columns = {
                r["column_name"]: (
                    r["data_type"],
                    r["is_nullable"] == "NO",
                    r["column_default"],
                    r["character_maximum_length"],
                )
                for r in db.query(
                    "SELECT column_name, data_type, is_nullable, column_default, "
                    "character_maximum_length FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = ?",
                    table,
                )
            }
            indexes = {
                r["indexname"]: tuple(
                    c.strip().strip('"')
                    for c in re.search(r"\((.*)\)", r["indexdef"]).group(1).split(",")
                )
                for r in db.query(
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE schemaname = 'public' AND tablename = ? AND indexname NOT LIKE '%_pkey'",
                    table,
                )
            }
            foreign = {
                r["definition"]
                for r in db.query(
                    "SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint "
                    "WHERE contype = 'f' AND conrelid = ?::regclass",
                    table,
                )
            }
        schema[table] = {"columns": columns, "indexes": indexes, "foreign": foreign}
    if db.engine == "sqlite":  # the FTS5 tables and their triggers (issue 17)
        schema["search"] = {
            (r["type"], r["name"], r["sql"])
            for r in db.query(
                "SELECT type, name, sql FROM sqlite_master "
                "WHERE name IN ('chat_search', 'message_search') "
                "OR (type = 'trigger' AND name LIKE '%search%')"
            )
        }
    return schema


def migrate_back(env: dict[str, str], migration_id: str) -> None:
    """Piccolo's ``migrations backwards`` of chatsvc's app, down to ``migration_id`` (the
    schema as it was when that migration was the newest)."""
    command = ("migrations", "backwards", "chatsvc", "--migration_id", migration_id, "-y")
    back = subprocess.run(
        [sys.executable, "-m", "piccolo.main", *command],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert back.returncode == 0, back.stdout + back.stderr


def migrated_back(db: Database, tmp_path: Path, migration_id: str) -> dict[str, str]:
    """``db`` migrated to the newest schema and back to ``migration_id``'s; the environment
    that migrates it on (``chatsvc migrate``) or back again (:func:`migrate_back`)."""
    env = clean_environment(DATABASE_URL=db.url)
    assert run_chatsvc("migrate", cwd=tmp_path, env=env).returncode == 0
    migrate_back(env, migration_id)
    return env


def old_user(db: Database, username: str = "old") -> int:
    """A user stored straight into the database, as an older version would have; its id."""
    db.query(
        "INSERT INTO piccolo_user (username, password, first_name, last_name, email, active, "
        "admin, superuser) VALUES (?, 'x', '', '', ?, ?, ?, ?)",
        username,
        f"{username}@example.com",
        True,
        False,
        False,
    )
    return db.query("SELECT id FROM piccolo_user WHERE username = ?", username)[0]["id"]


def test_migrations_match_the_table_definitions(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    migrated, defined = make_database(engine), make_database(engine)

    result = run_chatsvc("migrate", cwd=tmp_path, env=clean_environment(DATABASE_URL=migrated.url))
    assert result.returncode == 0, result.stdout + result.stderr
    again = run_chatsvc("migrate", cwd=tmp_path, env=clean_environment(DATABASE_URL=migrated.url))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[forwards]... ok" not in again.stdout  # nothing left to run

    created = subprocess.run(
        [sys.executable, "-c", CREATE_FROM_DEFINITIONS],
        cwd=tmp_path,
        env=clean_environment(DATABASE_URL=defined.url),
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr

    from_migrations, from_definitions = _schema(migrated), _schema(defined)
    for table in TABLES:
        got, want = from_migrations[table], from_definitions[table]
        assert got["columns"] == want["columns"], table
        assert got["foreign"] == want["foreign"], table
        assert all("CASCADE" in str(fk).upper() for fk in got["foreign"]), got["foreign"]
        composite = {
            f"{table}_{'_'.join(columns)}": columns for columns in COMPOSITE_INDEXES.get(table, ())
        }
        assert got["indexes"] == {**want["indexes"], **composite}, table
        if table in ("chat", "message"):
            assert composite, f"{table} has no index for its list query"
    if engine == "sqlite":
        assert from_migrations["search"] == from_definitions["search"]
        assert len(from_migrations["search"]) == 8  # 2 FTS5 tables, 3 triggers each
    else:
        for table in ("chat", "message"):
            assert from_migrations[table]["columns"]["search"][0] == "tsvector"
            assert from_migrations[table]["indexes"][f"{table}_search"] == ("search",)


async def test_piccolo_sees_no_pending_changes() -> None:
    """Piccolo's own auto-migration differ finds nothing to add to ``migrations/``."""
    from piccolo.apps.migrations.commands.new import AutoMigrationManager

    statements = await AutoMigrationManager().get_alter_statements(app_config=APP_CONFIG)
    assert sum(len(s.statements) for s in statements) == 0, [s.statements for s in statements]


def test_trees_stored_before_their_size_was_kept_get_it(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """A database migrated up to before ``chat_tree.size``, holding a tree, gets the tree's
    size (bytes of compact JSON) when migrated on: the per-user cap counts it."""
    db = make_database(engine)
    before_size = "2026-12-06T04:51:15:720028"
    env = migrated_back(db, tmp_path, before_size)
    owner = old_user(db)
    chat = uuid.uuid4()
    now = datetime.now(UTC)
    db.query(
        "INSERT INTO chat (id, owner, title, created_at, updated_at) VALUES (?, ?, 't', ?, ?)",
        chat,
        owner,
        now,
        now,
    )
    root = {"id": "root", "value": "héllo", "children": []}
    db.query("INSERT INTO chat_tree (chat, version, root) VALUES (?, 3, ?)", chat, json.dumps(root))
    forwards = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert forwards.returncode == 0, forwards.stdout + forwards.stderr
    size = db.query("SELECT size FROM chat_tree WHERE chat = ?", chat)[0]["size"]
    assert size == len(json.dumps(root, separators=(",", ":"), ensure_ascii=False).encode()) == 44


def test_chats_stored_before_trees_become_single_branches(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """A database filled by the schema before message trees (issue 15) keeps every message
    when migrated on, and each chat becomes one branch in its order: every message's
    parent is the one before it (``created_at``, then id), the first one has none, and
    the chat's active leaf is left empty (its newest message)."""
    from datetime import timedelta

    db = make_database(engine)
    before_trees = "2026-12-06T11:24:35:483064"
    env = migrated_back(db, tmp_path, before_trees)
    columns = {
        row["name"] if engine == "sqlite" else row["column_name"]
        for row in (
            db.query("PRAGMA table_info(message)")
            if engine == "sqlite"
            else db.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'message'"
            )
        )
    }
    assert "parent" not in columns  # today's schema, as it was before trees
    owner = old_user(db)
    start = datetime.now(UTC)
    chats: dict[uuid.UUID, list[uuid.UUID]] = {}
    for number, count in enumerate((5, 1, 0, 4)):
        chat = uuid.uuid4()
        db.query(
            "INSERT INTO chat (id, owner, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            chat,
            owner,
            f"chat {number}",
            start,
            start,
        )
        # Stored out of order, and two messages of the last chat at one instant (the id
        # breaks the tie, as the history always did).
        stamps = [start + timedelta(seconds=i) for i in range(count)]
        if count == 4:
            stamps[2] = stamps[1]
        ids = [uuid.uuid4() for _ in stamps]
        for index in reversed(range(count)):
            db.query(
                "INSERT INTO message (id, chat, role, content, status, created_at) "
                "VALUES (?, ?, ?, ?, 'complete', ?)",
                ids[index],
                chat,
                "user" if index % 2 == 0 else "assistant",
                f"message {index}",
                stamps[index],
            )
        ordered = sorted(zip(stamps, ids, strict=True), key=lambda pair: (pair[0], str(pair[1])))
        chats[chat] = [message_id for _, message_id in ordered]
    forwards = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert forwards.returncode == 0, forwards.stdout + forwards.stderr

    assert db.query("SELECT count(*) AS n FROM message")[0]["n"] == 10
    for chat, order in chats.items():
        rows = db.query("SELECT id, parent, content FROM message WHERE chat = ?", chat)
        parent_of = {uuid.UUID(str(r["id"])): r["parent"] for r in rows}
        assert set(parent_of) == set(order)
        expected = [None, *order[:-1]] if order else []
        assert [
            uuid.UUID(str(parent_of[m])) if parent_of[m] is not None else None for m in order
        ] == expected, chat
        leaf = db.query("SELECT active_leaf FROM chat WHERE id = ?", chat)[0]["active_leaf"]
        assert leaf is None


def test_replies_stored_before_usage_was_tracked_get_their_usage_marked(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """Issue 16: a reply with the server's figures is marked not estimated; one without
    gets its completion estimated from its text and reasoning (4 characters a token,
    rounded up), its prompt left unknown, and is marked estimated; user messages and
    replies still streaming are left alone. Backwards, the estimates are emptied again."""
    db = make_database(engine)
    before_usage = "2026-12-06T11:24:36:000000"
    env = migrated_back(db, tmp_path, before_usage)
    owner = old_user(db)
    chat, now = uuid.uuid4(), datetime.now(UTC)
    db.query(
        "INSERT INTO chat (id, owner, title, created_at, updated_at) VALUES (?, ?, 't', ?, ?)",
        chat,
        owner,
        now,
        now,
    )
    rows = {  # role, status, content, reasoning, prompt, completion
        "reported": ("assistant", "complete", "hello", "", 10, 20),
        "aborted": ("assistant", "aborted", "x" * 10, "y" * 3, None, None),
        "half": ("assistant", "failed", "abcd", "", 12, None),
        "question": ("user", "complete", "hi there", "", None, None),
        "running": ("assistant", "streaming", "so far", "", None, None),
    }
    ids = {name: uuid.uuid4() for name in rows}
    for name, (role, status, content, reasoning, prompt, completion) in rows.items():
        db.query(
            "INSERT INTO message (id, chat, role, content, reasoning, status, prompt_tokens, "
            "completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ids[name],
            chat,
            role,
            content,
            reasoning,
            status,
            prompt,
            completion,
            now,
        )

    def usage() -> dict[str, tuple]:
        found = {}
        for name, message_id in ids.items():
            (row,) = db.query(
                "SELECT prompt_tokens, completion_tokens, usage_estimated FROM message "
                "WHERE id = ?",
                message_id,
            )
            estimated = row.get("usage_estimated")
            found[name] = (
                row["prompt_tokens"],
                row["completion_tokens"],
                None if estimated is None else bool(estimated),
            )
        return found

    forwards = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert forwards.returncode == 0, forwards.stdout + forwards.stderr
    assert usage() == {
        "reported": (10, 20, False),
        "aborted": (None, 4, True),  # 13 characters
        "half": (12, 1, True),  # the server's prompt kept, the completion estimated
        "question": (None, None, None),
        "running": (None, None, None),
    }
    (per_user,) = db.query(
        "SELECT prompt_tokens, completion_tokens, total_tokens, replies, estimated_replies "
        "FROM user_usage WHERE account = ?",
        owner,
    )
    assert per_user == {
        "prompt_tokens": 22,
        "completion_tokens": 25,
        "total_tokens": 47,
        "replies": 3,
        "estimated_replies": 2,
    }
    (daily,) = db.query("SELECT id, day, replies FROM user_daily_usage WHERE account = ?", owner)
    day = now.date().isoformat()
    assert daily == {"id": f"{owner}/{day}", "day": day, "replies": 3}

    migrate_back(env, before_usage)
    (row,) = db.query(
        "SELECT prompt_tokens, completion_tokens FROM message WHERE id = ?", ids["reported"]
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 20)
    (row,) = db.query(
        "SELECT prompt_tokens, completion_tokens FROM message WHERE id = ?", ids["aborted"]
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (None, None)
    again = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert usage()["aborted"] == (None, 4, True)


def test_replies_stored_before_daily_spend_are_counted_in_their_day(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """Issue 11: ``daily_spend`` starts with the sums the daily budget made until then, the
    tokens of every reply by its user and the UTC day it started (user messages count
    nothing), so no budget of the day changes with the upgrade; backwards, the rows go."""
    db = make_database(engine)
    before_spend = "2026-12-06T20:50:00:000000"
    env = migrated_back(db, tmp_path, before_spend)
    owner = old_user(db)
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    chats = [uuid.uuid4(), uuid.uuid4()]
    for chat in chats:
        db.query(
            "INSERT INTO chat (id, owner, title, created_at, updated_at) VALUES (?, ?, 't', ?, ?)",
            chat,
            owner,
            today,
            today,
        )
    rows = [  # chat, role, prompt, completion, started
        (chats[0], "assistant", 10, 20, today),
        (chats[1], "assistant", 5, None, today),
        (chats[1], "user", 100, 100, today),
        (chats[0], "assistant", 7, 8, yesterday),
    ]
    for chat, role, prompt, completion, started in rows:
        db.query(
            "INSERT INTO message (id, chat, role, content, status, prompt_tokens, "
            "completion_tokens, created_at) VALUES (?, ?, ?, 'x', 'complete', ?, ?, ?)",
            uuid.uuid4(),
            chat,
            role,
            prompt,
            completion,
            started,
        )

    forwards = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert forwards.returncode == 0, forwards.stdout + forwards.stderr
    found = db.query("SELECT id, account, day, tokens FROM daily_spend ORDER BY day")
    days = [yesterday.date().isoformat(), today.date().isoformat()]
    assert found == [
        {"id": f"{owner}/{days[0]}", "account": owner, "day": days[0], "tokens": 15},
        {"id": f"{owner}/{days[1]}", "account": owner, "day": days[1], "tokens": 35},
    ]

    migrate_back(env, before_spend)
    again = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert db.query("SELECT SUM(tokens) AS tokens FROM daily_spend")[0]["tokens"] == 50


def test_messages_stored_before_their_owner_was_kept_get_it(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """Issue 11: every message stored before ``message.owner`` gets its chat's owner, so a
    reply left streaming by the upgrade still counts against its user's running replies;
    backwards, the column goes and the messages stay."""
    db = make_database(engine)
    before_owner = "2026-12-07T17:00:01:000000"
    env = migrated_back(db, tmp_path, before_owner)
    first, second = old_user(db), old_user(db, "older")
    now = datetime.now(UTC)
    expected: dict[str, int] = {}
    for owner in (first, second, first):
        chat = uuid.uuid4()
        db.query(
            "INSERT INTO chat (id, owner, title, created_at, updated_at) VALUES (?, ?, 't', ?, ?)",
            chat,
            owner,
            now,
            now,
        )
        for role, status in (("user", "complete"), ("assistant", "streaming")):
            message = uuid.uuid4()
            db.query(
                "INSERT INTO message (id, chat, role, content, status, created_at) "
                "VALUES (?, ?, ?, 'x', ?, ?)",
                message,
                chat,
                role,
                status,
                now,
            )
            expected[str(message)] = owner

    forwards = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert forwards.returncode == 0, forwards.stdout + forwards.stderr
    found = {str(row["id"]): row["owner"] for row in db.query("SELECT id, owner FROM message")}
    assert found == expected

    migrate_back(env, before_owner)
    kept = db.query("SELECT * FROM message")
    assert {str(row["id"]) for row in kept} == set(expected)
    assert "owner" not in kept[0]


def test_rows_stored_before_search_are_indexed(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    """Issue 17: the search migration indexes the titles and messages already stored
    (empty ones are skipped), and backwards it leaves them untouched."""
    db = make_database(engine)
    before_search = "2026-12-06T17:41:08:000000"
    env = migrated_back(db, tmp_path, before_search)
    owner = old_user(db)
    chat, now = uuid.uuid4(), datetime.now(UTC)
    db.query(
        "INSERT INTO chat (id, owner, title, created_at, updated_at) "
        "VALUES (?, ?, 'old zebra notes', ?, ?)",
        chat,
        owner,
        now,
        now,
    )
    for content in ("a zebra crossing", "", "nothing here"):
        db.query(
            "INSERT INTO message (id, chat, role, content, status, created_at) "
            "VALUES (?, ?, 'user', ?, 'complete', ?)",
            uuid.uuid4(),
            chat,
            content,
            now,
        )
    forwards = run_chatsvc("migrate", cwd=tmp_path, env=env)
    assert forwards.returncode == 0, forwards.stdout + forwards.stderr

    if engine == "sqlite":
        found = db.query(
            "SELECT m.content FROM message_search JOIN message m ON m.rowid = message_search.rowid "
            "WHERE message_search MATCH 'zebra'"
        )
        titles = db.query("SELECT rowid FROM chat_search WHERE chat_search MATCH 'zebra'")
        db.query("INSERT INTO message_search(message_search) VALUES ('integrity-check')")
    else:
        found = db.query(
            "SELECT content FROM message WHERE search @@ websearch_to_tsquery('simple', 'zebra')"
        )
        titles = db.query(
            "SELECT id FROM chat WHERE search @@ websearch_to_tsquery('simple', 'zebra')"
        )
    assert [row["content"] for row in found] == ["a zebra crossing"]
    assert len(titles) == 1
