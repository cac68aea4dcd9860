"""API documentation pages: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

Both pages load only what this server serves under ``/docs/assets/``: Swagger UI
and ReDoc from the ``fastapi-offline`` package (1.7.7 ships Swagger UI 5.32.6 and
ReDoc 2.5.3; upgrading the package upgrades them), and our start-up scripts and
stylesheet from ``chatsvc/apidocs/``. Nothing comes from another host, so the pages work
offline, and no third-party script runs on the origin where the web client keeps
its token. Each page gets a Content-Security-Policy that allows scripts from
this origin only (no inline script) and connections to this origin only.

The schema itself is ``/schema/openapi.json``; Litestar's own pages under
``/schema`` (which load from CDNs) are not served.
"""

from __future__ import annotations

import importlib.util
from html import escape
from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin

# Litestar types one of its parameters as `PathLike` without an argument.
from litestar.static_files import (
    create_static_files_router,  # pyright: ignore[reportUnknownVariableType]
)

RENDER_PLUGINS: list[OpenAPIRenderPlugin] = [JsonRenderPlugin(path="/openapi.json")]
SCHEMA_URL = "/schema/openapi.json"
ASSETS = "/docs/assets"

#: Our start-up scripts and stylesheet for the two pages.
STARTERS_DIR = Path(__file__).resolve().parent.parent / "apidocs"

#: Scripts and styles from this origin only; Swagger UI and ReDoc draw icons as data: URIs.
_POLICY = [
    "default-src 'none'",
    "script-src 'self'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]
SWAGGER_POLICY = "; ".join([*_POLICY, "style-src 'self'"])
#: ReDoc styles itself with styled-components (``<style>`` elements it writes) and
#: indexes the schema for search in a worker it starts from a ``blob:`` URL.
REDOC_POLICY = "; ".join([*_POLICY, "style-src 'self' 'unsafe-inline'", "worker-src blob:"])


def vendor_dir() -> Path:
    """The ``static`` folder of ``fastapi-offline``, found without importing it (or FastAPI)."""
    spec = importlib.util.find_spec("fastapi_offline")
    locations = spec.submodule_search_locations if spec else None
    if not locations:
        raise RuntimeError("fastapi-offline is missing: it ships Swagger UI and ReDoc for /docs")
    return Path(next(iter(locations))) / "static"


def _page(title: str, head: list[str], root_id: str) -> bytes:
    tags = "\n  ".join(head)
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{escape(title)}</title>
  <link rel="icon" href="/static/icon.svg" type="image/svg+xml">
  {tags}
</head>
<body>
  <noscript>The API documentation needs JavaScript; the schema is at
  <a href="{SCHEMA_URL}">{SCHEMA_URL}</a>.</noscript>
  <div id="{root_id}" data-spec-url="{SCHEMA_URL}"></div>
</body>
</html>
""".encode()


SWAGGER_PAGE = _page(
    "chatsvc API: Swagger UI",
    [
        f'<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">',
        f'<link rel="stylesheet" href="{ASSETS}/docs.css">',
        f'<script src="{ASSETS}/swagger-ui-bundle.js" defer></script>',
        f'<script src="{ASSETS}/swagger.js" defer></script>',
    ],
    "swagger-ui",
)
REDOC_PAGE = _page(
    "chatsvc API: ReDoc",
    [
        f'<link rel="stylesheet" href="{ASSETS}/docs.css">',
        f'<script src="{ASSETS}/redoc.standalone.js" defer></script>',
        f'<script src="{ASSETS}/redoc.js" defer></script>',
    ],
    "redoc",
)


def _html(page: bytes, policy: str) -> Response[bytes]:
    return Response(
        page,
        media_type=MediaType.HTML,
        headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"},
    )


@get("/docs", media_type=MediaType.HTML, include_in_schema=False, exclude_from_auth=True)
async def swagger_ui() -> Response[bytes]:
    return _html(SWAGGER_PAGE, SWAGGER_POLICY)


@get("/redoc", media_type=MediaType.HTML, include_in_schema=False, exclude_from_auth=True)
async def redoc() -> Response[bytes]:
    return _html(REDOC_PAGE, REDOC_POLICY)


def assets() -> Router:
    """``/docs/assets/*``: Swagger UI, ReDoc and our start-up scripts, revalidated on each load."""
    return create_static_files_router(
        path=ASSETS,
        directories=[STARTERS_DIR, vendor_dir()],
        name="docs-assets",
        include_in_schema=False,
        opt={"exclude_from_auth": True},
        cache_control=CacheControlHeader(no_cache=True),
    )
