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
  Users added, password changes (a user's row, or the admin's own "change
  password") and changes of ``active``, ``admin`` and ``superuser`` go
  through :class:`~chatsvc.accounts.Accounts`: our password rules, hashing in
  worker threads, tokens revoked by a new password or a deactivation, and the
  user's open sockets re-checked on every instance.
- Chats, messages and instances are read-only: changing them here would bypass
  the generation engine (running replies, events, leases).
- The password hash is never sent: Piccolo leaves ``Secret`` columns out of
  its responses, and requests naming it (to select or sort) are refused.
- Logins are rate-limited per address by ``LOGIN_ATTEMPTS_PER_MINUTE``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import msgspec
from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send
from piccolo.apps.user.tables import BaseUser
from piccolo.columns import Column
from piccolo_admin.endpoints import TableConfig, create_admin, superuser_validators
from piccolo_api.crud.endpoints import OrderBy, PiccoloCRUD
from piccolo_api.crud.hooks import Hook, HookType
from piccolo_api.crud.validators import Validators
from piccolo_api.rate_limiting.middleware import InMemoryLimitProvider
from starlette.exceptions import HTTPException
from starlette.requests import Request

from chatsvc.accounts import MAX_PASSWORD, MIN_PASSWORD, Accounts
from chatsvc.errors import ChatsvcError, Unauthorized
from chatsvc.settings import Settings
from chatsvc.tables import Chat, Instance, Message
from chatsvc.wire import LoginRequest, RegisterRequest

#: The app's :class:`Accounts`, for the login of the admin request being served.
_accounts: ContextVar[Accounts] = ContextVar("chatsvc_admin_accounts")

#: How long an address that made too many login attempts stays refused.
LOGIN_BLOCK_SECONDS = 300

_SECRET_COLUMNS = frozenset(column._meta.name for column in BaseUser._meta.secret_columns)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AdminUser(BaseUser, tablename="piccolo_user"):
    """``piccolo_user`` as the admin sees it: staff log in, users change through Accounts."""

    # What Piccolo's "change password" page checks before calling `update_password`.
    _min_password_length = MIN_PASSWORD
    _max_password_length = MAX_PASSWORD

    @classmethod
    async def login(cls, username: str, password: str) -> int | None:
        try:
            msgspec.convert({"username": username, "password": password}, LoginRequest)
        except msgspec.ValidationError:
            return None
        try:
            user = await _accounts.get().authenticate(username, password)
        except Unauthorized:
            return None
        return user.id if user.staff else None

    @classmethod
    async def update_password(cls, user: str | int, password: str) -> None:
        """The admin's own "change password" page; ``user`` is the session's user id."""
        try:
            await _accounts.get().change_user(int(user), {"password": password})
        except ChatsvcError as exc:
            raise HTTPException(status_code=400, detail=exc.message) from exc

    @classmethod
    async def create_user(cls, username: str, password: str, **extra_params: Any) -> AdminUser:
        """A user added in the admin: our username and password rules, then Accounts."""
        try:
            msgspec.convert({"username": username, "password": password}, RegisterRequest)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        superuser = bool(extra_params.get("superuser"))
        staff = bool(extra_params.get("admin")) or superuser
        accounts = _accounts.get()
        try:
            created = await accounts.create_user(
                username, password, staff=staff, superuser=superuser
            )
            if extra_params.get("active") is False:
                await accounts.change_user(created.id, {"active": False})
        except ChatsvcError as exc:
            raise ValueError(exc.message) from exc  # Piccolo answers 400 with the message
        return cls(id=created.id, username=created.username)


async def _user_patched(row_id: Any, values: dict[Column, Any]) -> dict[Column, Any]:
    """A user's row edited in the admin: the change is made here, through Accounts.

    Piccolo would hash a new password on the event loop with its own rules, and
    a deactivation must revoke tokens and reach open sockets. Piccolo's own
    update then only rewrites the id with itself, so that it still answers
    with the row as saved.
    """
    changes = {column._meta.name: value for column, value in values.items()}
    if not changes.get("password"):
        changes.pop("password", None)  # an empty password field leaves the password alone
    try:
        user_id = int(row_id)
        await _accounts.get().change_user(user_id, changes)
    except ChatsvcError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from exc
    except ValueError as exc:
        raise HTTPException(status_code=400, detail="not a user id") from exc
    return {AdminUser.id: user_id}


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
            # The auth table: Piccolo puts its superuser check first (listed here too).
            AdminUser,
            menu_group="Users",
            visible_columns=[
                AdminUser.id,
                AdminUser.username,
                AdminUser.active,
                AdminUser.admin,
                AdminUser.superuser,
                AdminUser.last_login,
            ],
            exclude_visible_filters=[AdminUser.password],
            validators=Validators(every=[superuser_validators, _no_secret_columns]),
            hooks=[Hook(hook_type=HookType.pre_patch, callable=_user_patched)],
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
        # Chat.owner refers to BaseUser: included automatically, it would serve
        # `piccolo_user` a second time, without AdminUser's checks. AdminUser serves it.
        auto_include_related=False,
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
