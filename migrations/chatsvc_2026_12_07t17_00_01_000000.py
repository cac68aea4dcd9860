"""The tokens of the replies already stored, per user and UTC day, into ``daily_spend``.

The same sums the daily budget made until now (prompt and completion tokens of the
assistant messages, by the UTC day of their start, in the chats their users still have),
so no user's budget of the day changes with the upgrade. Backwards, the rows go (the
previous migration's backwards drops the table).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T17:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "daily_spend from the replies already stored"

#: The UTC day of a timestamp, as text: SQLite stores Piccolo's timestamps as UTC text.
DAY = {
    "postgres": "to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "sqlite": "substr(m.created_at, 1, 10)",
}
FILL = (
    "INSERT INTO daily_spend (id, account, day, tokens) "
    "SELECT CAST(c.owner AS TEXT) || '/' || {day}, c.owner, {day}, "
    "SUM(COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0)) "
    "FROM message m JOIN chat c ON c.id = m.chat WHERE m.role = 'assistant' "
    "GROUP BY c.owner, {day}"
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="chatsvc", description=DESCRIPTION)

    async def fill():
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(FILL.format(day=DAY[engine.engine_type]))

    async def empty():
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DELETE FROM daily_spend")

    manager.add_raw(fill)
    manager.add_raw_backwards(empty)
    return manager
