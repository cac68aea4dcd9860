"""Piccolo admin at ``/admin``: operators browse users, chats and messages.

Piccolo's own admin (a FastAPI app) mounted inside Litestar, built once per
app on its first request (:mod:`chatsvc.api.admin_mount`). It has its own
session auth (a cookie, CSRF-protected login at ``/admin/public/login/``); our
JWT auth does not apply to it. Here:

- Only active staff users (``admin``) log in: others are refused at the login
  itself, so they get no session at all. Passwords are checked by
  :class:`~chatsvc.accounts.Accounts` (in worker threads), not by Piccolo's
  ``BaseUser.login``, which hashes on the event loop and would stall every
  stream for the length of a hash.
- Only superusers change users and their daily token budgets (``UserQuota``); staff
  read them (chats link to their owners).
- Chats, messages and instances are read-only: changing them here would bypass
  the generation engine (running replies, events, leases).
- Usage (issue 16): two read-only views, tokens by user and by user and UTC day,
  for superusers only (staff are refused their rows).
- The password hash is never sent: Piccolo leaves ``Secret`` columns out of
  its responses, and requests naming it (to select or sort) are refused.
- Users added, password changes (a user's row, or the admin's own "change
  password") and changes of ``active``, ``admin`` and ``superuser`` go
  through :class:`~chatsvc.accounts.Accounts`: our password rules, hashing in
  worker threads, tokens revoked by a new password or a deactivation, and the
  user's open sockets re-checked on every instance.
- Logins share the REST login's budgets (``LOGIN_ATTEMPTS_PER_MINUTE`` per
  address and per username, :mod:`chatsvc.login_limits`) and its bounded
  hashing queue; Piccolo's own per-address limiter is switched off.
- Admin logins, failed ones and every change (create, update, delete) leave an
  audit line (:mod:`chatsvc.audit`): who, what, from where; values never.
- API keys (issue 16): staff see every key (owner, name, prefix, dates), never
  its hash (a ``secret`` column); superusers revoke one (set ``revoked_at``, or
  delete it), through :class:`~chatsvc.keys.ApiKeys`, so its open sockets close
  on every instance at once. Keys are made by their users only.
- Share links (issue 17): staff see every link (chat, owner, prefix, title, dates),
  never its token's hash; superusers revoke one (set ``revoked_at``) through
  :class:`~chatsvc.shares.Shares`, or delete it. Links are made by their users only,
  and their snapshot is never edited here.
"""

from __future__ import annotations

import json
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import msgspec
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send
from litestar.types import Message as ASGIMessage
from piccolo.apps.user.tables import BaseUser
from piccolo.columns import Column
from piccolo_admin.endpoints import TableConfig, create_admin, superuser_validators
from piccolo_api.crud.endpoints import OrderBy, PiccoloCRUD
from piccolo_api.crud.hooks import Hook, HookType
from piccolo_api.crud.validators import Validators
from piccolo_api.rate_limiting.middleware import RateLimitProvider
from starlette.exceptions import HTTPException
from starlette.requests import Request

from chatsvc.accounts import Accounts
from chatsvc.audit import audit
from chatsvc.errors import ChatsvcError, NotFound, Overloaded, RateLimited, Unauthorized
from chatsvc.keys import ApiKeys
from chatsvc.settings import Settings
from chatsvc.shares import Shares
from chatsvc.tables import (
    Account,
    ApiKey,
    Chat,
    ChatShare,
    Instance,
    Message,
    MessageFeedback,
    UserDailyUsage,
    UserQuota,
    UserUsage,
)
from chatsvc.wire import LoginRequest, RegisterRequest


@dataclass(frozen=True, slots=True)
class _Caller:
    accounts: Accounts
    keys: ApiKeys
    shares: Shares
    address: str


#: The app's :class:`Accounts` and the client's address, for the admin request being served.
_caller: ContextVar[_Caller] = ContextVar("chatsvc_admin_caller")

# `_meta` is Piccolo's documented way to read a table's and a column's metadata.
_SECRET_COLUMNS = frozenset(
    column._meta.name  # pyright: ignore[reportPrivateUsage]
    for table in (BaseUser, ApiKey, ChatShare)
    for column in table._meta.secret_columns  # pyright: ignore[reportPrivateUsage]
)
#: What a superuser may change of an API key; the rest is the key's own.
_KEY_EDITABLE = frozenset({"name", "expires_at", "revoked_at"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
#: The largest body whose field names an audit line lists (a row is far smaller).
_AUDITED_BODY_BYTES = 65_536


class _SharedLoginBudget(RateLimitProvider):
    """Piccolo's login limiter, switched off: :meth:`AdminUser.login` charges ours."""

    def increment(self, identifier: str) -> None:
        del identifier


class AdminUser(Account, tablename="piccolo_user"):
    """``piccolo_user`` as the admin sees it: staff log in, users change through Accounts.

    Piccolo's "change password" page checks ``Account``'s length rules."""

    @classmethod
    async def login(cls, username: str, password: str) -> int | None:
        caller = _caller.get()
        try:
            msgspec.convert({"username": username, "password": password}, LoginRequest)
        except msgspec.ValidationError:
            audit(
                "login_failed",
                "admin login failed: malformed",
                username=username[:64],
                address=caller.address,
                via="admin",
            )
            return None
        accounts = caller.accounts
        try:
            user = await accounts.authenticate(
                username, password, address=caller.address, via="admin"
            )
        except Unauthorized:
            return None
        except (RateLimited, Overloaded) as exc:
            retry_after = str(int(exc.retry_after or 1))
            raise HTTPException(
                status_code=exc.status_code,
                detail=exc.message,
                headers={"Retry-After": retry_after},
            ) from exc
        if not user.staff:
            audit(
                "login_failed",
                "admin login failed: not staff",
                username=username,
                address=caller.address,
                via="admin",
            )
            return None
        audit(
            "admin_login", "admin login", username=username, user_id=user.id, address=caller.address
        )
        return user.id

    @classmethod
    async def update_password(cls, user: str | int, password: str) -> None:
        """The admin's own "change password" page; ``user`` is the session's user id."""
        try:
            await _caller.get().accounts.change_user(int(user), {"password": password})
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
        accounts = _caller.get().accounts
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
    changes = {
        column._meta.name: value  # pyright: ignore[reportPrivateUsage]
        for column, value in values.items()
    }
    if not changes.get("password"):
        changes.pop("password", None)  # an empty password field leaves the password alone
    try:
        user_id = int(row_id)
        await _caller.get().accounts.change_user(user_id, changes)
    except ChatsvcError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from exc
    except ValueError as exc:
        raise HTTPException(status_code=400, detail="not a user id") from exc
    return {AdminUser.id: user_id}


def _key_changes_of(values: dict[Column, Any]) -> dict[str, Any]:
    return {
        column._meta.name: value  # pyright: ignore[reportPrivateUsage]
        for column, value in values.items()
    }


def _key_changes(values: dict[Column, Any]) -> dict[str, Any]:
    changes = _key_changes_of(values)
    return {name: value for name, value in changes.items() if name in _KEY_EDITABLE}


async def _key_patched(row_id: Any, values: dict[Column, Any]) -> dict[Column, Any]:
    """A key's row edited in the admin: name, expiry and revocation only, made here through
    ApiKeys (a revocation or a new expiry re-checks the owner's sockets everywhere)."""
    try:
        key_id = UUID(str(row_id))
        await _caller.get().keys.change(key_id, _key_changes(values), by="admin")
    except ChatsvcError as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from exc
    except ValueError as exc:
        raise HTTPException(status_code=400, detail="not a key id") from exc
    return {ApiKey.id: key_id}


async def _key_deleted(row_id: Any) -> None:
    """A key deleted in the admin is revoked first, so its sockets close everywhere."""
    try:
        await _caller.get().keys.revoke(UUID(str(row_id)), owner=None, by="admin")
    except NotFound:
        pass  # revoked already (or gone): deleting it changes nothing for its sockets
    except ValueError as exc:
        raise HTTPException(status_code=400, detail="not a key id") from exc


async def _share_patched(row_id: Any, values: dict[Column, Any]) -> dict[Column, Any]:
    """A link's row edited in the admin: a revocation only, made through Shares (audited).
    Every other field (the snapshot, title, token) stays as its owner made it, and a
    revoked link stays revoked."""
    try:
        share_id = UUID(str(row_id))
    except ValueError as exc:
        raise HTTPException(status_code=400, detail="not a share link id") from exc
    if _key_changes_of(values).get("revoked_at") is not None:
        with suppress(NotFound):  # revoked already: it stays so
            await _caller.get().shares.revoke(share_id, owner=None, by="admin")
    return {ChatShare.id: share_id}


def _shares_not_made_here(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    if request.method.upper() in ("POST", "PUT"):
        raise HTTPException(
            status_code=405,
            detail="share links are made by their users (POST /api/chats/{id}/share)",
        )


def _keys_not_made_here(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    if request.method.upper() in ("POST", "PUT"):
        raise HTTPException(
            status_code=405, detail="API keys are made by their users (POST /api/keys)"
        )


def _no_secret_columns(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    """Refuse to select or sort by a secret column (Piccolo would answer ``null`` or 500)."""
    for key, value in request.query_params.multi_items():
        if key.rstrip("[]") not in ("__visible_fields", "__order"):
            continue
        for field in value.split(","):
            if field.strip().lstrip("+-").rsplit(".", 1)[-1] in _SECRET_COLUMNS:
                raise HTTPException(status_code=400, detail="secret columns cannot be queried")


def _superusers_only(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    """Every request, reads too (Piccolo's ``superuser_validators`` lets staff read)."""
    user: Any = request.user.user
    if not getattr(user, "superuser", False):
        raise HTTPException(status_code=403, detail="only superusers read usage")


def _read_only(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    if request.method.upper() not in _READS:
        raise HTTPException(status_code=405, detail="this table is read-only in the admin")


def _table_configs() -> list[TableConfig]:
    read_only = Validators(every=[_no_secret_columns, _read_only])
    superusers_read_only = Validators(every=[_superusers_only, _no_secret_columns, _read_only])
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
                Message.prompt_tokens,
                Message.completion_tokens,
                Message.usage_estimated,
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
            # Ratings of replies (issue 17): staff filter them by rating, read-only.
            MessageFeedback,
            menu_group="Chats",
            visible_columns=[
                MessageFeedback.id,
                MessageFeedback.updated_at,
                MessageFeedback.message,
                MessageFeedback.rating,
                MessageFeedback.comment,
            ],
            visible_filters=[
                MessageFeedback.rating,
                MessageFeedback.message,
                MessageFeedback.comment,
                MessageFeedback.created_at,
                MessageFeedback.updated_at,
            ],
            order_by=[OrderBy(MessageFeedback.updated_at, ascending=False)],
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
        # Views of the replies' usage (issue 16): what each user spent, for superusers only.
        TableConfig(
            UserUsage,
            menu_group="Usage",
            visible_columns=[
                UserUsage.account,
                UserUsage.total_tokens,
                UserUsage.prompt_tokens,
                UserUsage.completion_tokens,
                UserUsage.replies,
                UserUsage.estimated_replies,
                UserUsage.last_reply_at,
            ],
            visible_filters=[UserUsage.account, UserUsage.total_tokens, UserUsage.last_reply_at],
            order_by=[OrderBy(UserUsage.total_tokens, ascending=False)],
            validators=superusers_read_only,
        ),
        TableConfig(
            UserDailyUsage,
            menu_group="Usage",
            visible_columns=[
                UserDailyUsage.day,
                UserDailyUsage.account,
                UserDailyUsage.total_tokens,
                UserDailyUsage.prompt_tokens,
                UserDailyUsage.completion_tokens,
                UserDailyUsage.replies,
                UserDailyUsage.estimated_replies,
            ],
            visible_filters=[UserDailyUsage.account, UserDailyUsage.day],
            order_by=[OrderBy(UserDailyUsage.day, ascending=False)],
            validators=superusers_read_only,
        ),
        TableConfig(
            # Per-user daily token budgets (issue 16): superusers set them, staff read them.
            UserQuota,
            menu_group="Users",
            visible_columns=[UserQuota.account, UserQuota.daily_token_budget],
            validators=Validators(every=[superuser_validators, _no_secret_columns]),
        ),
        TableConfig(
            ApiKey,
            menu_group="Users",
            visible_columns=[ApiKey.id, *_KEY_FILTERS],
            visible_filters=list(_KEY_FILTERS),
            order_by=[OrderBy(ApiKey.created_at, ascending=False)],
            validators=Validators(
                every=[superuser_validators, _no_secret_columns, _keys_not_made_here]
            ),
            hooks=[
                Hook(hook_type=HookType.pre_patch, callable=_key_patched),
                Hook(hook_type=HookType.pre_delete, callable=_key_deleted),
            ],
        ),
        TableConfig(
            ChatShare,
            menu_group="Chats",
            visible_columns=[ChatShare.id, *_SHARE_FILTERS],
            visible_filters=list(_SHARE_FILTERS),
            order_by=[OrderBy(ChatShare.created_at, ascending=False)],
            validators=Validators(
                every=[superuser_validators, _no_secret_columns, _shares_not_made_here]
            ),
            hooks=[Hook(hook_type=HookType.pre_patch, callable=_share_patched)],
        ),
        TableConfig(
            Instance,
            menu_group="Operations",
            order_by=[OrderBy(Instance.heartbeat_at, ascending=False)],
            validators=read_only,
        ),
    ]


#: What the admin filters API keys by, and shows of them besides the id (never the hash).
_KEY_FILTERS = (
    ApiKey.owner,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.expires_at,
    ApiKey.revoked_at,
)


#: What the admin filters share links by, and shows of them besides the id (never the hash).
_SHARE_FILTERS = (
    ChatShare.chat,
    ChatShare.owner,
    ChatShare.prefix,
    ChatShare.title,
    ChatShare.created_at,
    ChatShare.revoked_at,
)


def _field_names(body: bytes) -> str | None:
    """The top-level keys of a JSON object body (never its values), comma-separated."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or not decoded:
        return None
    return ",".join(sorted(cast("dict[str, Any]", decoded)))


async def _audited(
    app: ASGIApp, scope: HTTPScope, receive: Receive, send: Send, address: str
) -> None:
    """Serve a change through the admin with its audit line (who, what, from where), written
    as the answer starts: a client that has the answer finds the line already there."""
    body = bytearray()
    written = False

    async def receive_and_keep() -> Any:
        message = await receive()
        if message["type"] == "http.request" and len(body) < _AUDITED_BODY_BYTES:
            body.extend(message.get("body", b""))
        return message

    def write(status: int | None) -> None:
        nonlocal written
        written = True
        method = scope["method"]
        parts = [part for part in scope["path"].split("/") if part]
        table = row = None
        if "tables" in parts[:-1]:
            at = parts.index("tables")
            table = parts[at + 1]
            row = parts[at + 2] if len(parts) > at + 2 else None
        what = f"{_VERBS.get(method, method.lower())} {table or '/'.join(parts)}"
        user: Any = scope.get("user")  # pyright: ignore[reportUnknownMemberType]
        audit(
            "admin_change",
            f"admin {what}" + (f" {row}" if row else ""),
            user=getattr(user, "username", None),
            user_id=getattr(user, "user_id", None),
            address=address,
            method=method,
            table=table,
            row=row,
            fields=_field_names(bytes(body)) if table else None,
            query=scope["query_string"].decode("latin-1") or None,
            status=status,
        )

    async def send_and_note(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start" and not written:
            write(message["status"])
        await send(message)

    try:
        await app(scope, receive_and_keep, send_and_note)
    finally:
        if not written:  # no answer began (the client left, or the admin failed)
            write(None)


def build_admin(settings: Settings, accounts: Accounts, keys: ApiKeys, shares: Shares) -> ASGIApp:
    """Piccolo's admin app, wrapped: each request knows its caller, and changes are audited.

    Built on the first request to ``/admin`` (:mod:`chatsvc.api.admin_mount`), not at start.
    """
    admin_app = create_admin(
        tables=_table_configs(),
        auth_table=AdminUser,
        # Chat.owner refers to BaseUser: included automatically, it would serve
        # `piccolo_user` a second time, without AdminUser's checks. AdminUser serves it.
        auto_include_related=False,
        site_name="chatsvc admin",
        production=settings.environment == "production",
        rate_limit_provider=_SharedLoginBudget(),
    )

    # Piccolo admin is a Starlette app: an ASGI app like ours, typed by another library.
    mounted = cast("ASGIApp", admin_app)

    async def admin(scope: Scope, receive: Receive, send: Send) -> None:
        client = scope["client"]
        address = client[0] if client else "unknown"
        token = _caller.set(_Caller(accounts, keys, shares, address))
        try:
            # A change is audited here; logins (under /public/) by AdminUser.login.
            if (
                scope["type"] == "http"
                and scope["method"] not in _READS
                and "/public/" not in scope["path"]
            ):
                await _audited(mounted, scope, receive, send, address)
            else:
                await mounted(scope, receive, send)
        finally:
            _caller.reset(token)

    return admin
