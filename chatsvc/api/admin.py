"""Piccolo admin at ``/admin``: operators browse users, chats and messages.

Piccolo's own admin (a FastAPI app) mounted inside Litestar, built once per
app. It has its own session auth (a cookie, CSRF-protected login at
``/admin/public/login/``); our JWT auth does not apply to it. Here:

- Only active staff users (``admin``) log in: others are refused at the login
  itself, so they get no session at all. Passwords are checked by
  :class:`~chatsvc.accounts.Accounts` (in worker threads), not by Piccolo's
  ``BaseUser.login``, which hashes on the event loop and would stall every
  stream for the length of a hash.
- Only superusers change users; staff read them (chats link to their owners).
- Chats, messages and instances are read-only: changing them here would bypass
  the generation engine (running replies, events, leases).
- The password hash is never sent: Piccolo leaves ``Secret`` columns out of
  its responses, and requests naming it (to select or sort) are refused.
- Logins are rate-limited per address by ``LOGIN_ATTEMPTS_PER_MINUTE``.
"""

from __future__ import annotations

from contextvars import ContextVar

import msgspec
from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send
from piccolo.apps.user.tables import BaseUser
from piccolo_admin.endpoints import TableConfig, create_admin, superuser_validators
from piccolo_api.crud.endpoints import OrderBy, PiccoloCRUD
from piccolo_api.crud.validators import Validators
from piccolo_api.rate_limiting.middleware import InMemoryLimitProvider
from starlette.exceptions import HTTPException
from starlette.requests import Request

from chatsvc.accounts import Accounts
from chatsvc.errors import Unauthorized
from chatsvc.settings import Settings
from chatsvc.tables import Chat, Instance, Message
from chatsvc.wire import LoginRequest

#: The app's :class:`Accounts`, for the login of the admin request being served.
_accounts: ContextVar[Accounts] = ContextVar("chatsvc_admin_accounts")

#: How long an address that made too many login attempts stays refused.
LOGIN_BLOCK_SECONDS = 300

_SECRET_COLUMNS = frozenset(column._meta.name for column in BaseUser._meta.secret_columns)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AdminUser(BaseUser, tablename="piccolo_user"):
    """``piccolo_user`` as the admin's login sees it: staff only, hashed off the event loop."""

    @classmethod
    async def login(cls, username: str, password: str) -> int | None:
        try:
            msgspec.convert({"username": username, "password": password}, LoginRequest)
        except msgspec.ValidationError:
            return None
        accounts = _accounts.get()
        try:
            user_id = await accounts.authenticate(username, password)
        except Unauthorized:
            return None
        user = await accounts.active_user(user_id)
        return user_id if user is not None and user.staff else None


def _no_secret_columns(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    """Refuse to select or sort by a secret column (Piccolo would answer ``null`` or 500)."""
    for key, value in request.query_params.multi_items():
        if key.rstrip("[]") not in ("__visible_fields", "__order"):
            continue
        for field in value.split(","):
            if field.strip().lstrip("+-").rsplit(".", 1)[-1] in _SECRET_COLUMNS:
                raise HTTPException(status_code=400, detail="secret columns cannot be queried")


def _read_only(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    if request.method.upper() not in _READS:
        raise HTTPException(status_code=405, detail="this table is read-only in the admin")


def _table_configs() -> list[TableConfig]:
    read_only = Validators(every=[_no_secret_columns, _read_only])
    return [
        TableConfig(
            Chat,
            menu_group="Chats",
            visible_columns=[Chat.id, Chat.title, Chat.owner, Chat.model, Chat.updated_at],
            visible_filters=[Chat.owner, Chat.title, Chat.model, Chat.created_at, Chat.updated_at],
            order_by=[OrderBy(Chat.updated_at, ascending=False)],
            validators=read_only,
        ),
        TableConfig(
            Message,
            menu_group="Chats",
            visible_columns=[
                Message.id,
                Message.created_at,
                Message.chat,
                Message.role,
                Message.status,
                Message.content,
                Message.model,
                Message.completion_tokens,
                Message.error_code,
            ],
            visible_filters=[
                Message.chat,
                Message.role,
                Message.status,
                Message.content,
                Message.created_at,
                Message.completed_at,
                Message.model,
                Message.error_code,
                Message.finish_reason,
                Message.instance,
            ],
            order_by=[OrderBy(Message.created_at, ascending=False)],
            validators=read_only,
        ),
        TableConfig(
            # Piccolo adds the superuser check only to its ``auth_table``, which is AdminUser.
            BaseUser,
            menu_group="Users",
            visible_columns=[
                BaseUser.id,
                BaseUser.username,
                BaseUser.active,
                BaseUser.admin,
                BaseUser.superuser,
                BaseUser.last_login,
            ],
            exclude_visible_filters=[BaseUser.password],
            validators=Validators(every=[superuser_validators, _no_secret_columns]),
        ),
        TableConfig(
            Instance,
            menu_group="Operations",
            order_by=[OrderBy(Instance.heartbeat_at, ascending=False)],
            validators=read_only,
        ),
    ]


def admin_mount(settings: Settings) -> ASGIRouteHandler:
    admin_app = create_admin(
        tables=_table_configs(),
        auth_table=AdminUser,
        site_name="chatsvc admin",
        production=settings.environment == "production",
        rate_limit_provider=InMemoryLimitProvider(
            timespan=60,
            limit=settings.login_attempts_per_minute,
            block_duration=LOGIN_BLOCK_SECONDS,
        ),
    )

    @asgi("/admin", is_mount=True, copy_scope=True, include_in_schema=False)
    async def admin(scope: Scope, receive: Receive, send: Send) -> None:
        token = _accounts.set(scope["litestar_app"].state.accounts)
        try:
            await admin_app(scope, receive, send)
        finally:
            _accounts.reset(token)

    return admin
