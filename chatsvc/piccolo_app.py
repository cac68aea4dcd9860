"""Piccolo app config: our tables, with their migrations in the top-level ``migrations/``."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from chatsvc.tables import (
    ApiKey,
    Chat,
    ChatShare,
    ChatTree,
    DailySpend,
    Instance,
    Message,
    MessageFeedback,
    RefreshToken,
    TokenVersion,
    UserQuota,
)

MIGRATIONS_FOLDER = Path(__file__).resolve().parent.parent / "migrations"

APP_CONFIG = AppConfig(
    app_name="chatsvc",
    migrations_folder_path=str(MIGRATIONS_FOLDER),
    table_classes=[
        Chat,
        Message,
        ChatTree,
        Instance,
        TokenVersion,
        RefreshToken,
        UserQuota,
        ApiKey,
        ChatShare,
        MessageFeedback,
        DailySpend,
    ],
    migration_dependencies=["piccolo.apps.user.piccolo_app"],
    commands=[],
)
