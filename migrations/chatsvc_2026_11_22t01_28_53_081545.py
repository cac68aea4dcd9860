"""Multi-column indexes that Piccolo columns cannot declare (see chatsvc.tables.COMPOSITE_INDEXES)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-22T01:28:53:081545"
VERSION = "1.38.0"
DESCRIPTION = "composite indexes"

INDEXES = {
    "chat_owner_updated_at": "chat (owner, updated_at)",
    "message_chat_created_at": "message (chat, created_at)",
}


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    async def create_indexes():
        for name, target in INDEXES.items():
            await engine_finder().run_ddl(f"CREATE INDEX {name} ON {target}")

    async def drop_indexes():
        for name in INDEXES:
            await engine_finder().run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(create_indexes)
    manager.add_raw_backwards(drop_indexes)
    return manager
