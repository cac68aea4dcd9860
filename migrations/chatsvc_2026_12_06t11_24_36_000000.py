"""Link the messages already stored into single-path trees (issue 15): each message's parent
is the message before it in its chat (``created_at``, then id), the first one has none.
And the index siblings and descendants are found by, ``message (chat, parent)`` (see
chatsvc.tables.COMPOSITE_INDEXES).

Every row is kept; ``chat.active_leaf`` stays empty, which means the newest message, so
each chat reads as it did. One statement (a window function), on SQLite and PostgreSQL.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-06T11:24:36:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.parent for the messages already stored"

INDEX = "message_chat_parent"
LINK = (
    "UPDATE message SET parent = ordered.previous FROM ("
    "SELECT id, LAG(id) OVER (PARTITION BY chat ORDER BY created_at, id) AS previous "
    "FROM message) AS ordered "
    "WHERE ordered.id = message.id AND ordered.previous IS NOT NULL"
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    async def link_messages() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(LINK)
        await engine.run_ddl(f"CREATE INDEX {INDEX} ON message (chat, parent)")

    async def unlink_messages() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(f"DROP INDEX IF EXISTS {INDEX}")
        await engine.run_ddl("UPDATE message SET parent = NULL")

    manager.add_raw(link_messages)
    manager.add_raw_backwards(unlink_messages)
    return manager
