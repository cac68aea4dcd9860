"""JWT authentication: ``Authorization: Bearer`` only, plus ``?token=`` on WebSockets.

Browsers cannot set headers on a WebSocket, so ``/ws`` also accepts the token
as a query parameter (docs/protocol.md section 1); the log filter in
:mod:`chatsvc.logs` keeps it out of every log line. There is no cookie auth:
a browser would send a cookie on a cross-site request by itself (CSRF), and a
bearer header it never does (issue 12).

A bearer that starts with ``csk_`` is an API key (:mod:`chatsvc.keys`; issue 16),
looked up by its hash instead of decoded as a JWT: one branch of
:meth:`TokenAuthMiddleware.authenticate_request`. Such a request's ``auth`` is a
:class:`KeyAuth`; the key routes refuse it (:func:`login_token_only`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import unquote
from uuid import UUID

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, WebSocketException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import OAuth2PasswordBearerAuth, Token
from litestar.security.jwt.middleware import JWTCookieAuthenticationMiddleware
from litestar.types import Method

from chatsvc.accounts import Accounts, ActiveUser
from chatsvc.api.problems import UnsupportedMediaType
from chatsvc.errors import Forbidden
from chatsvc.keys import ApiKeys, is_key
from chatsvc.sessions import Session
from chatsvc.wire import AccessToken

WS_UNAUTHORIZED = 4401
#: A user id as we issue it: ASCII digits, no sign, no leading zero, within a 32-bit serial.
_USER_ID = re.compile(r"[1-9][0-9]{0,9}")
MAX_USER_ID = 2**31 - 1
LOGIN_PATH = "/api/auth/login"


#: The claim carrying the user's token version when the token was issued.
VERSION_CLAIM = "ver"
#: The claim naming the session (refresh token family) the token belongs to.
SESSION_CLAIM = "sid"


#: The authenticated user of a request or socket (``request.user``).
AuthUser = ActiveUser


async def retrieve_user(token: Token, accounts: Accounts) -> AuthUser | None:
    """The token's user if it still exists, is active, and has not revoked the token.

    Deactivation locks a user out at once; a password change or a deactivation
    raises the user's token version, so older tokens stay refused afterwards.
    """
    if not _USER_ID.fullmatch(token.sub) or int(token.sub) > MAX_USER_ID:
        return None
    version = token.extras.get(VERSION_CLAIM)
    if type(version) is not int:
        return None
    user = await accounts.active_user(int(token.sub))
    if user is None or user.token_version != version:
        return None
    return user


class KeyAuth(msgspec.Struct, frozen=True, kw_only=True):
    """``request.auth`` of a request or socket authenticated with an API key."""

    key_id: UUID
    expires_at: datetime | None


def credential_end(auth: Token | KeyAuth) -> tuple[float, UUID | None]:
    """When a socket's credential expires (Unix time; a key without expiry: never), and
    the API key it is, if one."""
    if isinstance(auth, KeyAuth):
        ends = auth.expires_at.timestamp() if auth.expires_at is not None else math.inf
        return ends, auth.key_id
    return auth.exp.timestamp(), None


async def key_authentication(keys: ApiKeys | None, key: str) -> AuthenticationResult:
    """The user and :class:`KeyAuth` of a valid API key; ``NotAuthorizedException`` else."""
    holder = None if keys is None else await keys.holder(key)
    if holder is None:
        raise NotAuthorizedException("invalid, expired or revoked API key")
    user = AuthUser(
        id=holder.id,
        username=holder.username,
        staff=holder.admin,
        token_version=holder.token_version,
    )
    return AuthenticationResult(
        user=user, auth=KeyAuth(key_id=holder.key_id, expires_at=holder.expires_at)
    )


def login_token_only(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: the route needs a login token. A leaked key must not mint more keys, nor
    end the user's sessions or change the password (docs/protocol.md section 1.2)."""
    del handler
    # The scope, not `connection.auth`, which raises for an OPTIONS request (not authenticated).
    auth: object = connection.scope.get("auth")  # pyright: ignore[reportUnknownMemberType]
    if isinstance(auth, KeyAuth):
        raise Forbidden("this needs a login token, not an API key")


def bearer_token(header: str) -> str | None:
    """The token of ``Bearer <token>`` (the scheme in any case); ``None`` for any other scheme."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def raw_header(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The first value of header ``name`` among the ASGI scope's, as Litestar decodes it.

    Not ``connection.headers``: Litestar keeps the parsed headers it builds in the
    scope, which a WebSocket holds for its whole life (about 1.5 KB a socket).
    """
    wanted = name.lower().encode("latin-1")
    for key, value in headers:
        if key == wanted:
            return value.decode("latin-1")
    return None


def query_token(query_string: bytes) -> str | None:
    """The value of ``token=`` in a raw query string, its name spelt exactly so.

    The name is matched before any decoding: ``%74oken=`` is no token (the log
    filter would have to guess at such spellings; now it only has to redact them).
    """
    for pair in query_string.split(b"&"):
        name, equals, value = pair.partition(b"=")
        if name == b"token" and equals:
            return unquote(value.decode("ascii", "replace")) or None
    return None


class TokenAuthMiddleware(JWTCookieAuthenticationMiddleware):
    """``Authorization: Bearer``; on WebSockets also ``?token=``; WebSocket failures close 4401.

    It derives from the cookie middleware only because ``OAuth2PasswordBearerAuth``
    (our OpenAPI password flow) demands that type; it replaces the method that reads
    the cookie and never reads one (issue 12: a cookie made requests CSRF-able).
    ``api_keys`` is set on the subclass :func:`create_jwt_auth` makes for its app.
    """

    api_keys: ClassVar[ApiKeys | None] = None

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        is_websocket = connection.scope["type"] == "websocket"
        header = raw_header(connection.scope["headers"], self.auth_header)
        if header is not None:
            token = bearer_token(header)
        elif is_websocket:
            token = query_token(connection.scope["query_string"])
        else:
            token = None
        try:
            if token is None:
                raise NotAuthorizedException("missing or malformed bearer token")
            if is_key(token):
                return await key_authentication(self.api_keys, token)
            return await self.authenticate_token(encoded_token=token, connection=connection)
        except NotAuthorizedException as exc:
            if is_websocket:
                raise WebSocketException(detail="unauthorized", code=WS_UNAUTHORIZED) from exc
            raise


_BODY_METHODS: frozenset[Method] = frozenset({"POST", "PUT", "PATCH"})


def json_bodies_only(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: a route that reads a JSON body takes it only as ``application/json``.

    Litestar decodes ``data`` as JSON whatever the content type says, so a
    ``text/plain`` POST, which a browser sends cross-site without asking
    (a "simple request"), would be read as JSON (issue 12).
    """
    scope = connection.scope
    if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
        return
    if "data" not in handler.parsed_fn_signature.parameters:
        return
    headers = connection.headers
    content_type = headers.get("content-type")
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if content_type is None and not has_body:
        return  # no body at all: the handler answers that itself
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("send the body as JSON, with Content-Type: application/json")


def session_of(token: Token) -> UUID | None:
    """The session (refresh token family) an access token was issued for, if it names one."""
    claim = token.extras.get(SESSION_CLAIM)
    if not isinstance(claim, str):
        return None
    try:
        return UUID(claim)
    except ValueError:
        return None


class TokenIssuer:
    """Signs the access token of a session, next to its refresh token."""

    def __init__(self, auth: OAuth2PasswordBearerAuth[AuthUser]) -> None:
        self._auth = auth
        self.lifetime = int(auth.default_token_expiration.total_seconds())

    def issue(self, session: Session) -> AccessToken:
        user = session.user
        extras = {VERSION_CLAIM: user.token_version, SESSION_CLAIM: str(session.family)}
        # Litestar drops the fraction of a second from `exp`: say what is left of it.
        expires = time.time() + self.lifetime
        token = self._auth.create_token(  # pyright: ignore[reportUnknownMemberType]
            identifier=str(user.id), token_extras=extras
        )
        return AccessToken(
            access_token=token,
            expires_in=max(1, int(int(expires) - time.time())),
            refresh_token=session.refresh_token,
            refresh_expires_in=session.refresh_expires_in,
        )


def create_jwt_auth(
    secret: str, ttl_seconds: int, accounts: Accounts, *, keys: ApiKeys | None = None
) -> OAuth2PasswordBearerAuth[AuthUser]:
    async def retrieve(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> AuthUser | None:
        return await retrieve_user(token, accounts)

    class AppTokenAuthMiddleware(TokenAuthMiddleware):
        api_keys = keys

    return OAuth2PasswordBearerAuth[AuthUser](
        token_secret=secret,
        token_url=LOGIN_PATH,
        retrieve_user_handler=retrieve,
        default_token_expiration=timedelta(seconds=ttl_seconds),
        authentication_middleware_class=AppTokenAuthMiddleware,
        # Documentation pages stay public; our own public routes opt out with
        # `exclude_from_auth=True`. Patterns are searched unanchored: anchor them.
        exclude=[r"^/schema(/|$)", r"^/metrics$", r"^/admin(/|$)"],
        description="Log in at /api/auth/login, then send `Authorization: Bearer <token>`. "
        "Services send an API key the same way, `Authorization: Bearer csk_...` "
        "(made with `POST /api/keys`; docs/protocol.md section 1.2).",
        oauth_scopes={},  # OpenAPI requires the password flow's `scopes`, even empty
    )
