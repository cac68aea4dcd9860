"""Full-text search indexes over chat titles and message text (issue 17), kept in step by
the database itself, and filled with the rows already stored.

PostgreSQL: a generated ``search`` column (``tsvector``, text-search config ``simple``)
on ``chat`` (its title) and on ``message`` (its text), each with a GIN index. Adding a
stored generated column rewrites the table, which computes it for every existing row:
that is the backfill (it holds a lock on the table while it runs).

SQLite: FTS5 external-content tables ``chat_search`` and ``message_search`` over the
tables' ``rowid``, the words only (the text stays in ``chat`` and ``message``), kept in
step by triggers; the rows already stored are inserted here. Empty texts are not indexed
(a reply starts empty), so the triggers skip them both ways.

Backwards, every one of these objects goes; the stored chats and messages are untouched.

``create`` is also what ``tests/test_migrations.py`` runs on tables made from their
definitions, so the two schemas it compares both hold the search objects.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-06T20:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "full-text search indexes over chat titles and message text"

# 'simple': no stemming and no stop words, for text in any language, and the same words
# as SQLite's unicode61 tokenizer finds: both fold case and keep accents (PostgreSQL has
# no accent folding without the unaccent extension), see docs/operations.md "Search indexes".
POSTGRES = (
    "ALTER TABLE chat ADD COLUMN search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', title)) STORED",
    "CREATE INDEX chat_search ON chat USING gin (search)",
    "ALTER TABLE message ADD COLUMN search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED",
    "CREATE INDEX message_search ON message USING gin (search)",
)
POSTGRES_BACKWARDS = (
    "DROP INDEX IF EXISTS message_search",
    "ALTER TABLE message DROP COLUMN IF EXISTS search",
    "DROP INDEX IF EXISTS chat_search",
    "ALTER TABLE chat DROP COLUMN IF EXISTS search",
)

_FTS = (
    "CREATE VIRTUAL TABLE {table}_search USING fts5({column}, content='{table}', "
    "content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')"
)
_INDEX = "INSERT INTO {table}_search(rowid, {column}) SELECT {row}.rowid, {row}.{column} "
_UNINDEX = (
    "INSERT INTO {table}_search({table}_search, rowid, {column}) "
    "SELECT 'delete', {row}.rowid, {row}.{column} "
)
_TRIGGERS = (
    "CREATE TRIGGER {table}_search_insert AFTER INSERT ON {table} BEGIN "
    + _INDEX.format(row="new", table="{table}", column="{column}")
    + "WHERE new.{column} <> ''; END",
    "CREATE TRIGGER {table}_search_delete AFTER DELETE ON {table} BEGIN "
    + _UNINDEX.format(row="old", table="{table}", column="{column}")
    + "WHERE old.{column} <> ''; END",
    "CREATE TRIGGER {table}_search_update AFTER UPDATE OF {column} ON {table} BEGIN "
    + _UNINDEX.format(row="old", table="{table}", column="{column}")
    + "WHERE old.{column} <> ''; "
    + _INDEX.format(row="new", table="{table}", column="{column}")
    + "WHERE new.{column} <> ''; END",
)
SQLITE = tuple(
    statement.format(table=table, column=column, row=table)
    for table, column in (("chat", "title"), ("message", "content"))
    for statement in (
        _FTS,
        *_TRIGGERS,
        _INDEX + "FROM {table} WHERE {table}.{column} <> ''",
    )
)
SQLITE_BACKWARDS = tuple(
    statement
    for table in ("message", "chat")
    for statement in (
        *(
            f"DROP TRIGGER IF EXISTS {table}_search_{when}"
            for when in ("insert", "delete", "update")
        ),
        f"DROP TABLE IF EXISTS {table}_search",
    )
)


async def create() -> None:
    """Create the search objects and index the rows already stored."""
    engine = engine_finder()
    assert engine is not None
    for statement in POSTGRES if engine.engine_type == "postgres" else SQLITE:
        await engine.run_ddl(statement)


async def drop() -> None:
    engine = engine_finder()
    assert engine is not None
    for statement in POSTGRES_BACKWARDS if engine.engine_type == "postgres" else SQLITE_BACKWARDS:
        await engine.run_ddl(statement)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)
    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
