"""Fill ``chat_tree.size`` (added by the migration before) for the trees already stored."""

import json

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Serial
from piccolo.table import Table

ID = "2026-12-06T04:51:16:000000"
VERSION = "1.38.0"
DESCRIPTION = "chat_tree.size for existing trees"


class ChatTree(Table, tablename="chat_tree", schema=None):
    id = Serial(primary_key=True)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    async def fill_sizes() -> None:
        for row in await ChatTree.raw("SELECT id, root FROM chat_tree"):
            root = row["root"]
            if isinstance(root, str):
                root = json.loads(root)
            # Compact JSON, as chatsvc measures a tree.
            size = len(json.dumps(root, separators=(",", ":"), ensure_ascii=False).encode())
            await ChatTree.raw("UPDATE chat_tree SET size = {} WHERE id = {}", size, row["id"])

    manager.add_raw(fill_sizes)
    return manager
