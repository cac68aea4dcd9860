"""JWT authentication: Litestar's OAuth2 bearer auth, plus ``?token=`` on WebSockets.

Browsers cannot set headers on a WebSocket, so ``/ws`` also accepts the token
as a query parameter (PROTOCOL.md section 1); the log filter in
:mod:`chatsvc.logs` keeps it out of every log line.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, WebSocketException
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import OAuth2PasswordBearerAuth, Token
from litestar.security.jwt.middleware import JWTCookieAuthenticationMiddleware

from chatsvc.accounts import Accounts, ActiveUser
from chatsvc.wire import AccessToken

WS_UNAUTHORIZED = 4401
#: A user id as we issue it: ASCII digits, no sign, no leading zero, within a 32-bit serial.
_USER_ID = re.compile(r"[1-9][0-9]{0,9}")
MAX_USER_ID = 2**31 - 1
LOGIN_PATH = "/api/auth/login"


#: The claim carrying the user's token version when the token was issued.
VERSION_CLAIM = "ver"


class AuthUser(msgspec.Struct, frozen=True):
    """The authenticated user of a request or socket (``request.user``)."""

    id: int
    username: str
    staff: bool
    token_version: int


async def retrieve_user(
    token: Token, connection: ASGIConnection[Any, Any, Any, Any]
) -> AuthUser | None:
    """The token's user if it still exists, is active, and has not revoked the token.

    Deactivation locks a user out at once; a password change or a deactivation
    raises the user's token version, so older tokens stay refused afterwards.
    """
    if not _USER_ID.fullmatch(token.sub) or int(token.sub) > MAX_USER_ID:
        return None
    version = token.extras.get(VERSION_CLAIM)
    if type(version) is not int:
        return None
    accounts: Accounts = connection.app.state.accounts
    user = await accounts.active_user(int(token.sub))
    if user is None or user.token_version != version:
        return None
    return AuthUser(id=user.id, username=user.username, staff=user.staff, token_version=version)


class TokenAuthMiddleware(JWTCookieAuthenticationMiddleware):
    """Header first; on WebSockets also ``?token=``; WebSocket failures close with 4401."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        is_websocket = connection.scope["type"] == "websocket"
        try:
            if is_websocket and not connection.headers.get(self.auth_header):
                token = connection.query_params.get("token")
                if not token:
                    raise NotAuthorizedException("missing token")
                return await self.authenticate_token(encoded_token=token, connection=connection)
            return await super().authenticate_request(connection)
        except NotAuthorizedException as exc:
            if is_websocket:
                raise WebSocketException(detail="unauthorized", code=WS_UNAUTHORIZED) from exc
            raise


class TokenIssuer:
    """Signs access tokens for the login route."""

    def __init__(self, auth: OAuth2PasswordBearerAuth[AuthUser]) -> None:
        self._auth = auth
        self.lifetime = int(auth.default_token_expiration.total_seconds())

    def issue(self, user: ActiveUser) -> AccessToken:
        token = self._auth.create_token(
            identifier=str(user.id), token_extras={VERSION_CLAIM: user.token_version}
        )
        return AccessToken(access_token=token, expires_in=self.lifetime)


def create_jwt_auth(secret: str, ttl_seconds: int) -> OAuth2PasswordBearerAuth[AuthUser]:
    return OAuth2PasswordBearerAuth[AuthUser](
        token_secret=secret,
        token_url=LOGIN_PATH,
        retrieve_user_handler=retrieve_user,
        default_token_expiration=timedelta(seconds=ttl_seconds),
        authentication_middleware_class=TokenAuthMiddleware,
        # Documentation pages stay public; our own public routes opt out with
        # `exclude_from_auth=True`. Patterns are searched unanchored: anchor them.
        exclude=[r"^/schema(/|$)", r"^/metrics$", r"^/admin(/|$)"],
        description="Log in at /api/auth/login, then send `Authorization: Bearer <token>`.",
        oauth_scopes={},  # OpenAPI requires the password flow's `scopes`, even empty
    )
