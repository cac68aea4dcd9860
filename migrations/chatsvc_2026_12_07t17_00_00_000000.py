"""``daily_spend``: each user's tokens per UTC day, what the daily budget reads (issue 11).

A new table only; the next migration fills it from the replies already stored.
"""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete, OnUpdate
from piccolo.columns.column_types import BigInt, ForeignKey, Serial, Varchar
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table


class BaseUser(Table, tablename="piccolo_user", schema=None):
    id = Serial(
        null=False,
        primary_key=True,
        unique=False,
        index=False,
        index_method=IndexMethod.btree,
        choices=None,
        db_column_name="id",
        secret=False,
    )


ID = "2026-12-07T17:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "daily_spend: each user's tokens per UTC day"


def _params(**given: Any) -> dict[str, Any]:
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **given,
    }


COLUMNS: list[tuple[str, type, dict[str, Any]]] = [
    ("id", Varchar, _params(length=80, default="", primary_key=True)),
    (
        "account",
        ForeignKey,
        _params(
            references=BaseUser,
            on_delete=OnDelete.cascade,
            on_update=OnUpdate.cascade,
            target_column=None,
            index=True,
        ),
    ),
    ("day", Varchar, _params(length=10, default="")),
    ("tokens", BigInt, _params(default=0)),
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)
    manager.add_table(class_name="DailySpend", tablename="daily_spend", schema=None, columns=None)
    for name, column_class, params in COLUMNS:
        manager.add_column(
            table_class_name="DailySpend",
            tablename="daily_spend",
            column_name=name,
            db_column_name=name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )
    return manager
