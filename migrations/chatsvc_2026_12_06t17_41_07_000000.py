"""``message.usage_estimated`` (issue 16): the reply's token figures are chatsvc's estimate.

Added empty; the next migration fills it for the replies already stored.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Boolean
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-06T17:41:07:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.usage_estimated"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    manager.add_column(
        table_class_name="Message",
        tablename="message",
        column_name="usage_estimated",
        db_column_name="usage_estimated",
        column_class_name="Boolean",
        column_class=Boolean,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
