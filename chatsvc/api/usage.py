"""``GET /api/usage``: a user's token usage (issue 16), a thin handler over :mod:`chatsvc.usage`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import QueryParameter

from chatsvc import usage
from chatsvc.api.openapi import PROTECTED, errors
from chatsvc.api.security import MAX_USER_ID, AuthUser
from chatsvc.wire import UsageGrouping, UsageReport

_DAY = "A UTC day, `YYYY-MM-DD`"


@get(
    "/api/usage",
    tags=["usage"],
    operation_id="getUsage",
    summary="Read token usage",
    response_description="Totals of the replies that ended in the range, and their groups.",
    responses=errors(
        *PROTECTED,
        400,
        403,
        404,
        meaning={
            400: "A parameter is malformed, `from` is after `to`, or the range is longer "
            f"than {usage.MAX_DAYS} days (`invalid_message`).",
            403: "`user_id` is another user's and you are no superuser (`forbidden`).",
            404: "No user has this `user_id` (`not_found`; superusers only).",
        },
    ),
)
async def get_usage(
    request: Request[AuthUser, Any, Any],
    first: Annotated[
        date | None,
        QueryParameter(
            name="from",
            description=f"{_DAY}: the first day counted; default: {usage.DEFAULT_DAYS - 1} "
            "days before `to`.",
        ),
    ] = None,
    to: Annotated[
        date | None,
        QueryParameter(description=f"{_DAY}: the last day counted (included); default: today."),
    ] = None,
    group_by: Annotated[
        UsageGrouping,
        QueryParameter(description="`day` (UTC, oldest first), `chat` or `model` (largest first)."),
    ] = "day",
    user_id: Annotated[
        int | None,
        QueryParameter(ge=1, le=MAX_USER_ID, description="Another user's id (superusers only)."),
    ] = None,
    limit: Annotated[
        int,
        QueryParameter(ge=1, le=usage.MAX_GROUPS, description="Groups listed at most."),
    ] = usage.DEFAULT_GROUPS,
) -> UsageReport:
    """Tokens of your replies that ended (`prompt`, `completion`, `total`), how many
    replies, and which share of them are estimates, from UTC day `from` to `to`, in all
    and by `group_by`. A superuser may read any user's with `user_id`."""
    return await usage.report(
        request.user.id,
        user_id=user_id,
        first=first,
        last=to,
        group_by=group_by,
        limit=limit,
    )
