"""Share links: ``/api/chats/{id}/share``, ``/api/shares`` and the public ``/api/shared``
(docs/protocol.md section 3.4).

The owner makes, lists and revokes links with a token (a login token or an API
key, as for every chat route); ``GET /api/shared/{token}`` needs none. Its answer,
found or not, is never cached nor indexed, and a missing link answers one body
whatever the reason, so a token tells nothing about the chat behind it.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter

from chatsvc.api.openapi import PROTECTED, PublicOperation, errors
from chatsvc.api.problems import error_body
from chatsvc.api.security import AuthUser
from chatsvc.errors import NotFound
from chatsvc.shares import SHARE_NOT_FOUND, Shares
from chatsvc.wire import NewShare, SharedChat, ShareList

ChatId = Annotated[UUID, PathParameter(description="The chat's UUID.")]
ShareId = Annotated[UUID, PathParameter(description="The link's id (not its token).")]
ShareToken = Annotated[str, PathParameter(description="The link's token (`shr_...`).")]
AuthRequest = Request[AuthUser, Any, Any]

#: A snapshot is for whoever holds the link: no shared cache keeps it, no search engine lists it.
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
}


@post(
    "/api/chats/{chat_id:str}/share",
    tags=["shares"],
    operation_id="createShare",
    summary="Share a chat as a read-only snapshot",
    status_code=201,
    response_description="The link, shown this once: its token is never shown again.",
    responses=errors(
        *PROTECTED,
        400,
        404,
        409,
        413,
        meaning={
            409: "The chat has the most unrevoked links allowed (`limit_reached`).",
            413: "The conversation has too many messages to share (`too_large`).",
        },
    ),
)
async def create_share(
    request: AuthRequest, chat_id: ChatId, shares: NamedDependency[Shares]
) -> NewShare:
    """Copy the chat's title and active branch as they are now (finished messages only: a
    reply still streaming is left out) into a link anyone who has it can read."""
    return await shares.create(request.user.id, chat_id)


@get(
    "/api/chats/{chat_id:str}/shares",
    tags=["shares"],
    operation_id="listChatShares",
    summary="List a chat's share links",
    response_description="The chat's links not revoked, newest first (never their tokens).",
    responses=errors(*PROTECTED, 400, 404),
)
async def list_chat_shares(
    request: AuthRequest, chat_id: ChatId, shares: NamedDependency[Shares]
) -> ShareList:
    """Id, token prefix, title and creation time of each link."""
    return await shares.list(request.user.id, chat_id)


@get(
    "/api/shares",
    tags=["shares"],
    operation_id="listShares",
    summary="List your share links",
    response_description="Your links not revoked, of every chat, newest first.",
    responses=errors(*PROTECTED),
)
async def list_shares(request: AuthRequest, shares: NamedDependency[Shares]) -> ShareList:
    """Id, chat, token prefix, title and creation time of each link."""
    return await shares.list(request.user.id)


@delete(
    "/api/shares/{share_id:str}",
    tags=["shares"],
    operation_id="revokeShare",
    summary="Revoke a share link",
    status_code=204,
    response_description="Revoked: the link answers 404 from now on.",
    responses=errors(*PROTECTED, 400, 404),
)
async def revoke_share(
    request: AuthRequest, share_id: ShareId, shares: NamedDependency[Shares]
) -> None:
    """Another user's link, or one revoked already, is `404`."""
    await shares.revoke(share_id, owner=request.user.id, by="owner")


@get(
    "/api/shared/{token:str}",
    tags=["shares"],
    operation_id="getShared",
    summary="Read a shared snapshot",
    response_description="The snapshot: title, when it was shared, and its messages.",
    operation_class=PublicOperation,
    exclude_from_auth=True,
    responses=errors(
        400,
        404,
        429,
        503,
        meaning={404: "Unknown, revoked, or its chat deleted: one answer (`not_found`)."},
    ),
)
async def get_shared(token: ShareToken, shares: NamedDependency[Shares]) -> Response[SharedChat]:
    """No login needed: the token is the permission. Answers `Cache-Control: no-store` and
    `X-Robots-Tag: noindex`, found or not."""
    try:
        shared = await shares.shared(token)
    except NotFound:
        missing = error_body(404, SHARE_NOT_FOUND, "not_found")
        return Response[Any](missing, status_code=404, headers=PRIVATE_HEADERS)
    return Response(shared, headers=PRIVATE_HEADERS)
