"""``message.owner`` for the messages already stored, and the index a user's running
replies are found by, ``message (owner, status)`` (see chatsvc.tables.COMPOSITE_INDEXES).

Admitting a reply counts the user's replies ``streaming``; through the chat, that read
every streaming reply of every user (docs/performance.md). A chat's owner never changes,
so each message takes its chat's. Backwards, the index goes (the previous migration's
backwards drops the column).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T21:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.owner for the messages already stored, and its index"

INDEX = "message_owner_status"
FILL = "UPDATE message SET owner = (SELECT owner FROM chat WHERE chat.id = message.chat)"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    async def fill_and_index() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(FILL)
        await engine.run_ddl(f"CREATE INDEX {INDEX} ON message (owner, status)")

    async def drop_index() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(f"DROP INDEX IF EXISTS {INDEX}")

    manager.add_raw(fill_and_index)
    manager.add_raw_backwards(drop_index)
    return manager
