"""``/api/keys``: a user's API keys for services (docs/protocol.md section 1.2).

Managed with a login token only (:func:`~chatsvc.api.security.login_token_only`):
a leaked key must not be able to make more keys, nor list or revoke them.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from chatsvc.api.openapi import PROTECTED, errors
from chatsvc.api.security import AuthUser, login_token_only
from chatsvc.keys import ApiKeys
from chatsvc.wire import ApiKeyCreate, ApiKeyList, NewApiKey

KeyId = Annotated[UUID, PathParameter(description="The key's id (not the key).")]
AuthRequest = Request[AuthUser, Any, Any]
_KEYS_NEED_LOGIN = {403: "Sent with an API key: keys are managed with a login token (`forbidden`)."}


class ApiKeyController(Controller):
    path = "/api/keys"
    tags = ["keys"]  # noqa: RUF012 (Litestar's own attribute)
    guards = [login_token_only]  # noqa: RUF012

    @post(
        operation_id="createApiKey",
        summary="Create an API key",
        status_code=201,
        response_description="The key, shown this once: store it now.",
        responses=errors(
            *PROTECTED,
            400,
            403,
            409,
            meaning={
                **_KEYS_NEED_LOGIN,
                409: "The user keeps the most keys allowed already (`limit_reached`).",
            },
        ),
    )
    async def create_key(
        self, request: AuthRequest, data: JSONBody[ApiKeyCreate], keys: NamedDependency[ApiKeys]
    ) -> NewApiKey:
        """Make a key that acts as you (`Authorization: Bearer csk_...`) on every route and
        on `/ws`. The answer holds the key itself, which is never shown again."""
        return await keys.create(request.user.id, data)

    @get(
        operation_id="listApiKeys",
        summary="List your API keys",
        response_description="Your keys not revoked, newest first (never the keys themselves).",
        responses=errors(*PROTECTED, 403, meaning=_KEYS_NEED_LOGIN),
    )
    async def list_keys(self, request: AuthRequest, keys: NamedDependency[ApiKeys]) -> ApiKeyList:
        """Name, prefix, creation, last use and expiry of each key."""
        return await keys.list(request.user.id)

    @delete(
        "/{key_id:str}",
        operation_id="revokeApiKey",
        summary="Revoke an API key",
        status_code=204,
        response_description="Revoked: refused from now on, its open sockets closed (4401).",
        responses=errors(*PROTECTED, 400, 403, 404, meaning=_KEYS_NEED_LOGIN),
    )
    async def revoke_key(
        self, request: AuthRequest, key_id: KeyId, keys: NamedDependency[ApiKeys]
    ) -> None:
        """Revoke one of your keys at once, on every instance. Another user's key, or one
        revoked already, is `404`."""
        await keys.revoke(key_id, owner=request.user.id, by="owner")
