"""Piccolo admin at ``/admin``: operators browse users, chats and messages.

Piccolo's own admin (a FastAPI app) mounted inside Litestar, built once per
app. It has its own session auth: only active staff users (``admin``) log in,
and only superusers manage users. Our JWT auth does not apply to it.
"""

from __future__ import annotations

from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send
from piccolo.apps.user.tables import BaseUser
from piccolo_admin.endpoints import TableConfig, create_admin

from chatsvc.settings import Settings
from chatsvc.tables import Chat, Instance, Message


def admin_mount(settings: Settings) -> ASGIRouteHandler:
    admin_app = create_admin(
        tables=[
            TableConfig(Chat, menu_group="Chats"),
            TableConfig(Message, menu_group="Chats"),
            TableConfig(BaseUser, exclude_visible_columns=[BaseUser.password], menu_group="Users"),
            TableConfig(Instance, menu_group="Operations"),
        ],
        site_name="chatsvc admin",
        production=settings.environment == "production",
    )

    @asgi("/admin", is_mount=True, copy_scope=True, include_in_schema=False)
    async def admin(scope: Scope, receive: Receive, send: Send) -> None:
        await admin_app(scope, receive, send)

    return admin
