"""Usage of the replies already stored, and the admin's usage views (issue 16).

Replies stored before usage was tracked keep the figures the model server sent
(``usage_estimated`` false). Those it sent none for (aborted replies, servers without
usage) get their completion estimated from their stored text and reasoning, at 4
characters a token, as chatsvc estimates it now, and are marked estimated; their
prompt stays unknown (null): the request they were sent was not kept, and rebuilding
it would mean walking every branch. User messages and replies still streaming are
left alone (the reply's end, or the recovery of an interrupted one, fills them).

Two read-only views for the admin's usage tables, the replies that ended, by user
(``user_usage``: every user, all time) and by user and UTC day of the reply's start
(``user_daily_usage``). Backwards, the views go and the figures of the replies marked
estimated are emptied again, as before this migration null meant "the server sent none"
(a reply the server sent one figure of, rare, loses that one too; the fully reported
ones keep theirs).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-06T17:41:08:000000"
VERSION = "1.38.0"
DESCRIPTION = "usage of the replies already stored, and the admin's usage views"

_ENDED_REPLY = "m.role = 'assistant' AND m.status <> 'streaming'"
REPORTED = (
    "UPDATE message SET usage_estimated = FALSE WHERE role = 'assistant' "
    "AND status <> 'streaming' AND prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL"
)
ESTIMATED = (
    "UPDATE message SET usage_estimated = TRUE, completion_tokens = "
    "COALESCE(completion_tokens, (LENGTH(content) + LENGTH(reasoning) + 3) / 4) "
    "WHERE role = 'assistant' AND status <> 'streaming' "
    "AND (prompt_tokens IS NULL OR completion_tokens IS NULL)"
)
UNESTIMATED = (
    "UPDATE message SET prompt_tokens = NULL, completion_tokens = NULL WHERE usage_estimated = TRUE"
)
_SUMS = (
    "COALESCE(SUM(m.prompt_tokens), 0) AS prompt_tokens, "
    "COALESCE(SUM(m.completion_tokens), 0) AS completion_tokens, "
    "COALESCE(SUM(m.prompt_tokens), 0) + COALESCE(SUM(m.completion_tokens), 0) AS total_tokens, "
    "COUNT(CASE WHEN m.usage_estimated THEN 1 END) AS estimated_replies, "
    "MAX(m.created_at) AS last_reply_at"
)
USER_USAGE = (
    "CREATE VIEW user_usage AS SELECT u.id AS id, u.id AS account, COUNT(m.id) AS replies, "  # noqa: S608
    f"{_SUMS} FROM piccolo_user u LEFT JOIN chat c ON c.owner = u.id "
    f"LEFT JOIN message m ON m.chat = c.id AND {_ENDED_REPLY} GROUP BY u.id"
)
#: The UTC day of a timestamp, as text: SQLite stores Piccolo's timestamps as UTC text.
DAY = {
    "postgres": "to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "sqlite": "substr(m.created_at, 1, 10)",
}
USER_DAILY_USAGE = (
    "CREATE VIEW user_daily_usage AS SELECT CAST(c.owner AS TEXT) || '/' || {day} AS id, "  # noqa: S608
    "c.owner AS account, {day} AS day, COUNT(*) AS replies, "
    f"{_SUMS} FROM chat c JOIN message m ON m.chat = c.id AND {_ENDED_REPLY} "
    "GROUP BY c.owner, {day}"
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    async def fill() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(REPORTED)
        await engine.run_ddl(ESTIMATED)
        await engine.run_ddl(USER_USAGE)
        await engine.run_ddl(USER_DAILY_USAGE.format(day=DAY[engine.engine_type]))

    async def empty() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DROP VIEW IF EXISTS user_daily_usage")
        await engine.run_ddl("DROP VIEW IF EXISTS user_usage")
        await engine.run_ddl(UNESTIMATED)

    manager.add_raw(fill)
    manager.add_raw_backwards(empty)
    return manager
