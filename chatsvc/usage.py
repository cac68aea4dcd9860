"""A user's token usage over UTC days (issue 16): ``GET /api/usage``'s use case.

The figures are the stored replies' (each reply's prompt and completion tokens, the
model server's or chatsvc's estimate), summed by the database: ``usage_store``.
A user reads their own; a superuser anyone's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from chatsvc import usage_store
from chatsvc.errors import Forbidden, InvalidInput, NotFound
from chatsvc.usage_store import UsageRow
from chatsvc.wire import UsageGroup, UsageGrouping, UsageReport, UsageTotals

_T = TypeVar("_T", bound=UsageTotals)

#: Days a report covers when ``from`` is not given (``to`` included).
DEFAULT_DAYS = 30
#: The longest range one report may cover, in days.
MAX_DAYS = 366
#: Groups one report lists at most (``limit``), and by default.
MAX_GROUPS, DEFAULT_GROUPS = 1000, 100


async def report(
    viewer: int,
    *,
    user_id: int | None = None,
    first: date | None = None,
    last: date | None = None,
    group_by: UsageGrouping = "day",
    limit: int = DEFAULT_GROUPS,
    today: date | None = None,
) -> UsageReport:
    """``user_id``'s usage (the viewer's own by default) from UTC day ``first`` to ``last``,
    both included: by default the ``DEFAULT_DAYS`` days up to today (``today``: UTC)."""
    last = last or today or datetime.now(UTC).date()
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidInput(f"from: {first} is after to ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput(f"from, to: at most {MAX_DAYS} days in one report")
    owner = viewer if user_id is None else user_id
    if owner != viewer:
        if not await usage_store.superuser(viewer):
            raise Forbidden("user_id: only superusers read other users' usage")
        if await usage_store.superuser(owner) is None:
            raise NotFound("user not found")
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    totals, groups = await usage_store.usage_of(owner, start, end, group_by, limit + 1)
    return UsageReport(
        user_id=owner,
        from_=first,
        to=last,
        group_by=group_by,
        totals=_sums(totals, UsageTotals),
        groups=[_sums(row, UsageGroup) for row in groups[:limit]],
        truncated=len(groups) > limit,
    )


def _sums(row: UsageRow, kind: type[_T]) -> _T:
    """The row as the wire shows it: a group also has its key (and a chat its title)."""
    extra: dict[str, Any] = {"key": row.key or "", "title": row.title} if kind is UsageGroup else {}
    return kind(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        total_tokens=row.prompt_tokens + row.completion_tokens,
        replies=row.replies,
        estimated_replies=row.estimated_replies,
        estimated_share=round(row.estimated_replies / row.replies, 4) if row.replies else 0.0,
        **extra,
    )
