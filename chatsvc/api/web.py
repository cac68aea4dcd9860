"""The web chat client: ``GET /``, its static files under ``/static``, and the read-only
page of a share link, ``GET /share/{token}``.

Plain HTML, CSS and JavaScript from ``chatsvc/web/`` in the package: no build
step, nothing from another host, so it works offline and in a container. The
page gets a strict Content-Security-Policy: scripts and styles from this
origin only, no inline script, connections to this origin and its WebSocket.
Neither route needs a token (the page logs in itself) or appears in the
OpenAPI schema.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.params import PathParameter

# Litestar types one of its parameters as `PathLike` without an argument.
from litestar.static_files import (
    create_static_files_router,  # pyright: ignore[reportUnknownVariableType]
)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

#: A Host header we may repeat in the policy: a name or an IP literal, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """Same origin for everything; the WebSocket on the host the page came from."""
    sockets = f"ws://{host} wss://{host}" if host and _HOST.fullmatch(host) else "ws: wss:"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {sockets}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@cache
def _index_html() -> bytes:
    return (WEB_DIR / "index.html").read_bytes()


@get("/", include_in_schema=False, exclude_from_auth=True, media_type=MediaType.HTML)
async def index(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        _index_html(),
        media_type=MediaType.HTML,
        headers={
            "Content-Security-Policy": content_security_policy(request.headers.get("host")),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


@cache
def _share_html() -> bytes:
    return (WEB_DIR / "share.html").read_bytes()


@get(
    "/share/{token:str}",
    include_in_schema=False,
    exclude_from_auth=True,
    media_type=MediaType.HTML,
)
async def share_page(
    request: Request[Any, Any, Any], token: Annotated[str, PathParameter()]
) -> Response[bytes]:
    """The read-only page of a share link (issue 17); its script reads the token from the
    address and fetches ``/api/shared/{token}``. Never cached, indexed or sent as referrer."""
    del token  # the page is the same for every link
    return Response(
        _share_html(),
        media_type=MediaType.HTML,
        headers={
            "Content-Security-Policy": content_security_policy(request.headers.get("host")),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Robots-Tag": "noindex, nofollow",
        },
    )


def static_files() -> Router:
    """``/static/*``: the client's files, revalidated on each load (they are not versioned)."""
    return create_static_files_router(
        path="/static",
        directories=[WEB_DIR],
        name="web",
        include_in_schema=False,
        opt={"exclude_from_auth": True},
        cache_control=CacheControlHeader(no_cache=True),
    )
