"""Issue 16 point 3: a chat's own generation settings, `chat.temperature`, `chat.top_p` and
`chat.max_tokens`. Empty for every chat stored before: the server's settings hold for it,
as they did."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import DoublePrecision, Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-06T17:05:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "chat.temperature, chat.top_p, chat.max_tokens"


def _nullable() -> dict[str, object]:
    return {
        "default": None,
        "null": True,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
    }


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)
    for name, column_class in (
        ("temperature", DoublePrecision),
        ("top_p", DoublePrecision),
        ("max_tokens", Integer),
    ):
        manager.add_column(
            table_class_name="Chat",
            tablename="chat",
            column_name=name,
            db_column_name=name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=_nullable(),
            schema=None,
        )
    return manager
