"""``/admin``: the mount point of Piccolo's admin, which is built on its first request.

Piccolo admin brings FastAPI with it: importing it and building the admin app is about a
fifth of what a ``chatsvc serve`` costs to start (docs/architecture.md), for a page that
many instances never serve. So the start only mounts this handler; the first request to
``/admin`` imports and builds the admin (:mod:`chatsvc.api.admin`) in a worker thread, so
the event loop goes on serving streams meanwhile, and requests that come during the build
wait for it.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from chatsvc.accounts import Accounts
from chatsvc.keys import ApiKeys
from chatsvc.settings import Settings
from chatsvc.shares import Shares


def admin_mount(
    settings: Settings, accounts: Accounts, keys: ApiKeys, shares: Shares
) -> ASGIRouteHandler:
    """The ``/admin`` handler of one app: its admin is built once, on first use."""
    site: ASGIApp | None = None
    building = anyio.Lock()

    def build() -> ASGIApp:
        from chatsvc.api.admin import build_admin  # imports Piccolo admin and FastAPI

        return build_admin(settings, accounts, keys, shares)

    @asgi("/admin", is_mount=True, copy_scope=True, include_in_schema=False)
    async def admin(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal site
        if site is None:
            async with building:  # requests during the build wait for it
                if site is None:
                    site = await anyio.to_thread.run_sync(build)
        await site(scope, receive, send)

    return admin
