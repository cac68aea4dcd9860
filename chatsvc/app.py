"""``create_app``: the one place that builds chatsvc from its settings."""

from __future__ import annotations

import logging
import math
import secrets
import sqlite3
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg
import msgspec
from litestar import Litestar, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException, ValidationException, WebSocketException
from litestar.logging import LoggingConfig
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig
from litestar.security.jwt import OAuth2PasswordBearerAuth
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from chatsvc import __version__
from chatsvc.access import AccessWatch, SocketCounter
from chatsvc.accounts import Accounts, ActiveUser
from chatsvc.api import (
    admin_mount,
    auth,
    chats,
    docs,
    feedback,
    keys,
    ops,
    search,
    shares,
    transfer,
    usage,
    web,
    ws,
)
from chatsvc.api.headers import add_security_headers
from chatsvc.api.problems import error_body, validation_error
from chatsvc.api.security import AuthUser, TokenIssuer, create_jwt_auth, json_bodies_only
from chatsvc.api.services import Services
from chatsvc.bus import EventBus
from chatsvc.chats import Chats
from chatsvc.context import ContextBudgets
from chatsvc.database import connection_pool, engine_from_settings, use_engine
from chatsvc.database import identity as database_identity
from chatsvc.errors import ChatsvcError
from chatsvc.events import ChatEvents
from chatsvc.generation import Generations
from chatsvc.keys import ApiKeys
from chatsvc.login_limits import LoginLimits, address_group
from chatsvc.logs import logging_config
from chatsvc.providers import PROBE_SECONDS, LLMProvider, create_provider
from chatsvc.quota_rules import Clock, system_clock
from chatsvc.quotas import Quotas
from chatsvc.sessions import Sessions
from chatsvc.settings import Settings, load_settings
from chatsvc.shares import Shares
from chatsvc.telemetry import Telemetry
from chatsvc.trees import Trees
from chatsvc.wire import ErrorCode

log = logging.getLogger("chatsvc")

#: Driver errors that mean "the database cannot be reached right now".
DATABASE_DOWN = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    sqlite3.OperationalError,
)


def _chatsvc_error(_: Request[Any, Any, Any], exc: ChatsvcError) -> Response[Any]:
    headers: dict[str, str] = {}
    # `overloaded`, the per-user cap (`rate_limited`), the daily budget (`quota_exceeded`)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    extra = {"quota": msgspec.to_builtins(exc.quota)} if exc.quota is not None else {}
    return Response(
        error_body(exc.status_code, exc.message, exc.code, **extra),
        status_code=exc.status_code,
        headers=headers,
    )


_CODES: dict[int, ErrorCode] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own HTTP errors (auth middleware, routing) get our ``code`` too."""
    status = exc.status_code
    code = _CODES.get(status, "invalid_message" if status < 500 else "internal")
    body = error_body(status, exc.detail, code)
    if exc.extra:
        body["extra"] = exc.extra
    headers = dict(exc.headers or {})
    if status == 429 and "RateLimit-Reset" in headers:
        headers["Retry-After"] = str(max(1, int(headers["RateLimit-Reset"])))
    return Response(body, status_code=status, headers=headers)


def _unreadable_body(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A body that is not UTF-8, or JSON nested deeper than the decoder goes."""
    reason = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
    body = error_body(400, f"invalid input: the body is {reason}", "invalid_message")
    return Response(body, status_code=400)


def _database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("database unavailable: %s: %s", type(exc).__name__, exc)
    return Response(
        error_body(503, "the database is unavailable; try again shortly", "unavailable"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _client_key(request: Request[Any, Any, Any]) -> str:
    """Per user when the request is authenticated, else per client address."""
    user: ActiveUser | None = request.scope.get("user")  # pyright: ignore[reportUnknownMemberType]
    if user is not None:
        return f"user:{user.id}"
    return f"ip:{address_group(get_remote_address(request))}"


def rate_limits(settings: Settings) -> RateLimitConfig:
    """Litestar's rate limiting of every REST route (logins have their own: ``LoginLimits``)."""
    return RateLimitConfig(
        rate_limit=("minute", settings.rate_limit_per_minute),
        identifier_for_request=_client_key,
        exclude=[
            r"^/health",
            r"^/metrics$",
            r"^/docs",
            r"^/redoc",
            r"^/schema",
            r"^/ws$",
            r"^/static",
            r"^/$",
        ],
        store="rate_limit",
    )


async def _learn_context_lengths(
    provider: LLMProvider, budgets: ContextBudgets, models: tuple[str, ...]
) -> None:
    """Cap the history budgets by the context lengths the model server states (issue 13)."""
    stated = {}
    with anyio.move_on_after(PROBE_SECONDS * 2):
        stated = await provider.stated_contexts()
    budgets.take(stated, models)
    if provider.name == "echo":
        return  # no model server: the start banner says so
    for model in models:
        log.info("model %s: context %s", model, budgets.describe(model))


class ChatsvcApp(Litestar):
    """The Litestar app, on the database of its own settings.

    Piccolo binds every table to ``piccolo_conf.DB`` for the whole process;
    that engine routes each query to the one bound where it runs
    (``chatsvc.database.AppEngine``). Binding the app's engine around each of
    its connections and its lifespan covers all its code: the tasks it starts
    (replies, the event bus) and its worker threads inherit the binding, so
    two apps in one process each use their own database.
    """

    services: Services

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        with use_engine(self.services.engine):
            await super().__call__(scope, receive, send)


def _build_services(
    settings: Settings, clock: Clock
) -> tuple[Services, OAuth2PasswordBearerAuth[AuthUser]]:
    """Every service of one app, from its settings; and the token auth, which reads users."""
    bus = EventBus.from_url(settings.event_bus_url)
    access = AccessWatch(bus, settings.ws_recheck_seconds)
    accounts = Accounts(
        allow_registration=settings.allow_registration,
        hash_workers=settings.password_hash_workers,
        hash_queue=settings.password_hash_queue,
        hash_rounds=settings.password_hash_rounds,
        login_limits=LoginLimits(settings.login_attempts_per_minute),
        on_change=access.changed,
    )
    api_keys = ApiKeys(clock=lambda: datetime.now(UTC), on_change=access.changed)
    jwt_secret = settings.jwt_secret or secrets.token_urlsafe(48)
    jwt_auth = create_jwt_auth(jwt_secret, settings.jwt_ttl_seconds, accounts, keys=api_keys)
    events = ChatEvents(bus)
    telemetry = Telemetry()
    provider = create_provider(settings)
    trees = Trees(settings, events)
    budgets = ContextBudgets(settings.context_budget_tokens, settings.llm_max_tokens)
    quotas = Quotas(settings, clock)
    generations = Generations(
        settings, provider, events, bus, telemetry, trees=trees, budgets=budgets, quotas=quotas
    )
    services = Services(
        settings=settings,
        engine=engine_from_settings(settings),
        bus=bus,
        access=access,
        accounts=accounts,
        events=events,
        telemetry=telemetry,
        provider=provider,
        trees=trees,
        budgets=budgets,
        generations=generations,
        launcher=generations.launcher,
        chats=Chats(
            generations,
            models=settings.model_choices,
            max_chats=settings.max_chats_per_user,
            max_tokens_limit=settings.llm_max_tokens_limit,
            events=events,
        ),
        tokens=TokenIssuer(jwt_auth),
        sessions=Sessions(accounts, settings.refresh_token_ttl_seconds),
        sockets=SocketCounter(settings.max_sockets_per_user),
        quotas=quotas,
        keys=api_keys,
        shares=Shares(clock=lambda: datetime.now(UTC)),
    )
    return services, jwt_auth


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> ChatsvcApp:
    """Build the ASGI app. Importing chatsvc opens nothing; this does, in the lifespan.

    ``clock`` tells the time of the token budgets (their UTC day); tests pass their own.
    """
    settings = settings or load_settings()
    settings.check_serving()
    services, jwt_auth = _build_services(settings, clock)
    api_limit = rate_limits(settings)
    # A WebSocket is no request to time: the middleware would only wrap every frame sent
    # (a cost per token); `chatsvc_websockets_open` and the reply metrics count sockets.
    prometheus = PrometheusConfig(
        app_name="chatsvc", group_path=True, exclude=[r"^/metrics$", r"^/health", r"^/ws$"]
    )
    origins = settings.cors_origin_list

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:  # runs with `engine` bound
        if settings.jwt_secret is None:
            log.warning(
                "JWT_SECRET is not set: using a random one, so tokens will not survive a restart"
            )
        provider = services.provider
        await _learn_context_lengths(provider, services.budgets, settings.model_choices)
        async with connection_pool(services.engine):
            identity = await database_identity(services.engine)
            services.bus.name_deployment(identity, settings.jwt_secret)
            async with services.bus, services.events, services.access:
                try:
                    async with services.generations:
                        bus = services.bus
                        shared = f", namespace {bus.namespace}" if bus.shared else ""
                        log.info(
                            "instance %s, event bus: %s%s",
                            services.generations.instance,
                            bus.kind,
                            shared,
                        )
                        yield
                finally:
                    await provider.aclose()

    app = ChatsvcApp(
        route_handlers=[
            Router(
                "/api/auth",
                route_handlers=[
                    auth.register,
                    auth.login,
                    auth.refresh,
                    auth.logout,
                    auth.logout_all,
                ],
            ),
            auth.me,
            auth.change_password,
            chats.ChatController,
            chats.list_user_chats,
            chats.list_models,
            feedback.set_feedback,
            feedback.delete_feedback,
            transfer.export_chat,
            transfer.export_all,
            transfer.import_chats,
            keys.ApiKeyController,
            shares.create_share,
            shares.list_chat_shares,
            shares.list_shares,
            shares.revoke_share,
            shares.get_shared,
            usage.get_usage,
            search.search_chats,
            ops.health,
            ops.ready,
            ops.metrics,
            docs.swagger_ui,
            docs.redoc,
            docs.assets(),
            ws.ChatSocket,
            admin_mount.admin_mount(settings, services.accounts, services.keys, services.shares),
            web.index,
            web.share_page,
            web.static_files(),
        ],
        dependencies=services.dependencies(),
        lifespan=[lifespan],
        middleware=[api_limit.middleware, prometheus.middleware],
        cors_config=CORSConfig(allow_origins=origins, allow_credentials=False) if origins else None,
        on_app_init=[jwt_auth.on_app_init],
        before_send=[add_security_headers],
        guards=[json_bodies_only],
        exception_handlers={
            ChatsvcError: _chatsvc_error,
            HTTPException: _http_error,
            ValidationException: validation_error,
            UnicodeDecodeError: _unreadable_body,
            RecursionError: _unreadable_body,
            **dict.fromkeys(DATABASE_DOWN, _database_down),
        },
        openapi_config=OpenAPIConfig(
            title="chatsvc",
            version=__version__,
            description="Self-hosted chat backend: streaming LLM replies over WebSocket, "
            "SSE and REST. See docs/protocol.md.",
            path="/schema",
            render_plugins=docs.RENDER_PLUGINS,
        ),
        logging_config=LoggingConfig(
            **{
                k: v
                for k, v in logging_config(
                    settings.log_level, json=settings.environment == "production"
                ).items()
                if k != "version"
            },
            log_exceptions="always",
            # Client errors and a database outage (logged in one line) need no traceback.
            disable_stack_trace={
                *range(400, 500),
                WebSocketException,
                UnicodeDecodeError,
                RecursionError,
                *DATABASE_DOWN,
            },
        ),
        debug=False,
    )
    app.services = services
    return app
