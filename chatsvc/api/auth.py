"""``/api/auth/*`` (mounted under that prefix by ``create_app``), ``/api/me`` and its password."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import JSONBody
from litestar.security.jwt import Token

from chatsvc.accounts import Accounts
from chatsvc.api.openapi import PROTECTED, PublicOperation, errors
from chatsvc.api.problems import UnsupportedMediaType
from chatsvc.api.security import AuthUser, TokenIssuer, login_token_only, session_of
from chatsvc.quotas import Quotas
from chatsvc.sessions import Sessions
from chatsvc.wire import (
    NO_NUL,
    AccessToken,
    LoginRequest,
    PasswordChange,
    RefreshRequest,
    RegisterRequest,
    User,
)


@post(
    "/register",
    exclude_from_auth=True,
    tags=["auth"],
    operation_id="register",
    summary="Register an account",
    status_code=201,
    response_description="The new user.",
    operation_class=PublicOperation,
    responses=errors(
        400, 403, 409, 415, 429, 503, meaning={409: "The username is taken (`conflict`)."}
    ),
)
async def register(
    request: Request[Any, Any, Any],
    data: JSONBody[RegisterRequest],
    accounts: NamedDependency[Accounts],
) -> User:
    """Create an account (when `ALLOW_REGISTRATION` is on). A taken username is `409`."""
    return await accounts.register(data.username, data.password, address=client_address(request))


def client_address(request: Request[Any, Any, Any]) -> str:
    """The client's address (uvicorn puts a trusted proxy's ``X-Forwarded-For`` there)."""
    return request.client.host if request.client else "unknown"


def _login_schema() -> Schema:
    def text(longest: int) -> Schema:
        return Schema(type=OpenAPIType.STRING, min_length=1, max_length=longest, pattern=NO_NUL)

    return Schema(
        type=OpenAPIType.OBJECT,
        properties={"username": text(64), "password": text(256)},
        required=["username", "password"],
    )


@dataclass
class _LoginOperation(PublicOperation):
    """The login body may be JSON or an OAuth2 password form (for Swagger's Authorize)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        schema = _login_schema()
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=schema),
                RequestEncodingType.URL_ENCODED.value: OpenAPIMediaType(schema=schema),
            },
        )


async def _read_login(request: Request[Any, Any, Any]) -> LoginRequest:
    # JSON only as application/json (issue 12: no JSON in a body a browser may send
    # cross-site by itself); an OAuth2 password form as a form.
    media_type = request.content_type[0]
    if media_type not in (RequestEncodingType.URL_ENCODED, RequestEncodingType.JSON):
        raise UnsupportedMediaType(
            "send the login as application/json or application/x-www-form-urlencoded"
        )
    body = await request.body()
    try:
        if media_type == RequestEncodingType.URL_ENCODED:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            fields = {k: v[0] for k, v in form.items() if k in ("username", "password")}
            return msgspec.convert(fields, LoginRequest)
        return msgspec.json.decode(body, type=LoginRequest)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        named = re.search(r"`(\w+)`", message)
        key = path.rstrip("`") or (named.group(1) if named else "body")
        raise ValidationException(
            detail="invalid login body", extra=[{"key": key, "message": message, "source": "body"}]
        ) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValidationException(
            detail="invalid login body: expected a JSON object or a form",
            extra=[{"key": "body", "message": "not valid JSON", "source": "body"}],
        ) from exc


@post(
    "/login",
    exclude_from_auth=True,
    tags=["auth"],
    operation_id="login",
    summary="Log in",
    status_code=200,
    response_description="An access token for `Authorization: Bearer <token>` and a refresh "
    "token that renews it (`POST /api/auth/refresh`).",
    operation_class=_LoginOperation,
    responses=errors(
        400, 401, 415, 429, 503, meaning={401: "Wrong username or password (`unauthorized`)."}
    ),
)
async def login(
    request: Request[Any, Any, Any],
    accounts: NamedDependency[Accounts],
    sessions: NamedDependency[Sessions],
    tokens: NamedDependency[TokenIssuer],
) -> AccessToken:
    """Exchange a username and password for an access token and a refresh token (a new
    session). Wrong credentials are `401`."""
    credentials = await _read_login(request)
    user = await accounts.authenticate(
        credentials.username, credentials.password, address=client_address(request)
    )
    return tokens.issue(await sessions.start(user))


@post(
    "/refresh",
    exclude_from_auth=True,
    tags=["auth"],
    operation_id="refreshToken",
    summary="Renew a session's tokens",
    status_code=200,
    response_description="A new access token and a new refresh token (the one sent is used up).",
    operation_class=PublicOperation,
    responses=errors(
        400,
        401,
        415,
        429,
        503,
        meaning={
            401: "The refresh token is unknown, expired, ended, or was used before, which "
            "ends its session (`unauthorized`): log in again."
        },
    ),
)
async def refresh(
    request: Request[Any, Any, Any],
    data: JSONBody[RefreshRequest],
    sessions: NamedDependency[Sessions],
    tokens: NamedDependency[TokenIssuer],
) -> AccessToken:
    """Exchange a refresh token, once, for a new pair. Presenting it again ends the session."""
    session = await sessions.refresh(data.refresh_token, address=client_address(request))
    return tokens.issue(session)


@post(
    "/logout",
    exclude_from_auth=True,
    tags=["auth"],
    operation_id="logout",
    summary="End this session",
    status_code=204,
    response_description="The session of this refresh token has ended (or had already).",
    operation_class=PublicOperation,
    responses=errors(400, 415, 429, 503),
)
async def logout(data: JSONBody[RefreshRequest], sessions: NamedDependency[Sessions]) -> None:
    """Revoke the session of this refresh token; its access tokens expire on their own."""
    await sessions.end(data.refresh_token)


@post(
    "/logout-all",
    guards=[login_token_only],
    tags=["auth"],
    operation_id="logoutEverywhere",
    summary="End every session of the user",
    status_code=204,
    response_description="Every session ended, every token refused, open sockets closed.",
    responses=errors(*PROTECTED),
)
async def logout_all(
    request: Request[AuthUser, Any, Any], sessions: NamedDependency[Sessions]
) -> None:
    """Revoke every refresh token and every access token of the user (this one too); their
    open WebSockets close with 4401."""
    await sessions.end_all(request.user, address=client_address(request))


@post(
    "/api/me/password",
    guards=[login_token_only],
    tags=["auth"],
    operation_id="changePassword",
    summary="Change the password",
    status_code=200,
    response_description="A new token pair for this session; every other session has ended.",
    responses=errors(
        400,
        403,
        415,
        *PROTECTED,
        meaning={403: "The current password is wrong (`forbidden`)."},
    ),
)
async def change_password(
    request: Request[AuthUser, Token, Any],
    data: JSONBody[PasswordChange],
    sessions: NamedDependency[Sessions],
    tokens: NamedDependency[TokenIssuer],
) -> AccessToken:
    """Set a new password (checked as at registration) given the current one. Every other
    session ends (its tokens refused, its sockets closed); this one goes on with the pair
    returned (its sockets reconnect with the new access token)."""
    session = await sessions.change_password(
        request.user,
        session_of(request.auth),
        data.current_password,
        data.new_password,
        address=client_address(request),
    )
    return tokens.issue(session)


@get(
    "/api/me",
    tags=["auth"],
    operation_id="getCurrentUser",
    summary="Get the current user",
    response_description="The token's user, with today's tokens against the daily budget.",
    responses=errors(*PROTECTED),
)
async def me(request: Request[AuthUser, Any, Any], quotas: NamedDependency[Quotas]) -> User:
    """The user the token belongs to, and `daily_tokens`: the tokens of the replies they
    started today (UTC) against their daily budget (null: no limit), and when it resets."""
    user = request.user
    return User(id=user.id, username=user.username, daily_tokens=await quotas.today(user.id))
