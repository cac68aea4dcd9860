"""``GET /api/search``: full-text search (issue 17), a thin handler over :mod:`chatsvc.search`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.params import QueryParameter

from chatsvc import search
from chatsvc.api.openapi import PROTECTED, errors
from chatsvc.api.security import AuthUser
from chatsvc.wire import SearchPage


@get(
    "/api/search",
    tags=["search"],
    operation_id="searchChats",
    summary="Search chat titles and messages",
    response_description="Hits best first, with a plain-text snippet and the matched ranges.",
    responses=errors(
        *PROTECTED,
        400,
        meaning={
            400: "`q` is empty, too long, holds a NUL character or only excluded words, "
            "or `cursor` is not one this API returned (`invalid_message`).",
        },
    ),
)
async def search_chats(
    request: Request[AuthUser, Any, Any],
    q: Annotated[
        str,
        QueryParameter(
            min_length=1,
            max_length=search.MAX_QUERY,
            description='Web-search syntax: words (all must match), `"a phrase"`, `-word` '
            'or `-"a phrase"` to exclude, `or` between alternatives.',
        ),
    ],
    limit: Annotated[
        int, QueryParameter(ge=1, le=search.MAX_LIMIT, description="Hits per page.")
    ] = search.DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        QueryParameter(max_length=200, description="`next_cursor` of the previous page."),
    ] = None,
) -> SearchPage:
    """Your chat titles and message texts (every branch) that match `q`, best first;
    a title's hit has `message_id` null."""
    return await search.search(request.user.id, q, limit=limit, cursor=cursor)
