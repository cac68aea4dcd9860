"""API documentation pages at the top-level paths the contract names (``/docs``, ``/redoc``).

Litestar serves its schema pages under ``OpenAPIConfig.path`` (``/schema``);
these two handlers render the same plugins one level up.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.enums import MediaType
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
)

SWAGGER = SwaggerRenderPlugin(path="/swagger")
REDOC = RedocRenderPlugin(path="/redoc")
RENDER_PLUGINS: list[OpenAPIRenderPlugin] = [JsonRenderPlugin(path="/openapi.json"), SWAGGER, REDOC]


def _render(plugin: OpenAPIRenderPlugin, request: Request[Any, Any, Any]) -> bytes:
    return plugin.render(request, request.app.openapi_schema.to_schema())


@get("/docs", media_type=MediaType.HTML, include_in_schema=False, exclude_from_auth=True)
async def swagger_ui(request: Request[Any, Any, Any]) -> bytes:
    return _render(SWAGGER, request)


@get("/redoc", media_type=MediaType.HTML, include_in_schema=False, exclude_from_auth=True)
async def redoc(request: Request[Any, Any, Any]) -> bytes:
    return _render(REDOC, request)
