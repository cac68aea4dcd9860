"""``refresh_token``: the refresh tokens of login sessions, stored as SHA-256 (issue 16, point 1).

A new table only; nothing stored before is touched.
"""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete, OnUpdate
from piccolo.columns.column_types import UUID, ForeignKey, Integer, Serial, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.defaults.uuid import UUID4
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


ID = "2026-12-06T17:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "refresh_token table"


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
    ("id", UUID, _params(default=UUID4(), primary_key=True)),
    ("family", UUID, _params(default=UUID4(), index=True)),
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
    ("token_hash", Varchar, _params(default="", length=64, unique=True)),
    ("version", Integer, _params(default=0)),
    ("created_at", Timestamptz, _params(default=TimestamptzNow())),
    ("expires_at", Timestamptz, _params(default=TimestamptzNow())),
    ("used_at", Timestamptz, _params(default=None, null=True)),
    ("revoked_at", Timestamptz, _params(default=None, null=True)),
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)
    manager.add_table(
        class_name="RefreshToken", tablename="refresh_token", schema=None, columns=None
    )
    for name, column_class, params in COLUMNS:
        manager.add_column(
            table_class_name="RefreshToken",
            tablename="refresh_token",
            column_name=name,
            db_column_name=name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )
    return manager
