"""The ``chatsvc`` command: ``serve`` (the default), ``migrate``, ``createuser`` and ``chat``."""

from __future__ import annotations

import argparse
import contextlib
import gc
import getpass
import io
import logging
import logging.config
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import uvicorn

from chatsvc import __version__
from chatsvc.errors import ChatsvcError
from chatsvc.logs import logging_config
from chatsvc.settings import (
    ConfigError,
    Settings,
    describe_url,
    describe_variables,
    load_settings,
)
from chatsvc.terminal.commands import help_lines

if TYPE_CHECKING:
    import asyncio

    from piccolo.engine.base import Engine

    from chatsvc.app import ChatsvcApp

log = logging.getLogger("chatsvc")

EXIT_CONFIG = 2


class CommandError(Exception):
    """Ends the command with this one-line message and exit code 1."""


def _variables_help() -> str:
    width = max(len(name) for name, _, _ in describe_variables())
    lines = [
        f"  {name:<{width}}  {meaning} (default: {default})"
        for name, default, meaning in describe_variables()
    ]
    return "configuration (environment variables, or a .env file in the working directory):\n" + (
        "\n".join(lines)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatsvc",
        description="Self-hosted chat backend: streaming LLM replies over WebSocket, SSE and "
        "REST. With no command, runs `serve`.",
        epilog=_variables_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chatsvc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="apply pending migrations, then serve HTTP and WebSocket (the default)",
        description="Apply pending migrations, then serve HTTP and WebSocket with uvicorn.",
        epilog=_variables_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_options(serve)

    commands.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply every pending migration to DATABASE_URL and exit.",
    )

    create = commands.add_parser(
        "createuser",
        help="create an active user (password prompted, or read from stdin)",
        description="Create an active user. The password is prompted for on a terminal, "
        "or read from the first line of standard input (for scripts: "
        '`echo "$PW" | chatsvc createuser alice`).',
    )
    create.add_argument("username", help="3-64 characters: letters, digits, _ . -")
    create.add_argument("--staff", action="store_true", help="may log in to the admin at /admin")
    create.add_argument(
        "--superuser", action="store_true", help="staff who may also manage users (implies --staff)"
    )

    chat = commands.add_parser(
        "chat",
        help="terminal client: chat with a running server",
        description="Chat with a running chatsvc server from the terminal: log in, pick or\n"
        "start a chat, and read the replies as they stream. Ctrl-C during a reply\n"
        "stops it (its text so far is kept); Ctrl-C or Ctrl-D at the prompt leaves.",
        epilog=CHAT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument(
        "--url", help="the server (default: http://127.0.0.1:PORT, PORT from the settings)"
    )
    chat.add_argument("--user", metavar="NAME", help="log in as NAME (asked for when missing)")
    chat.add_argument(
        "--chat", metavar="ID", type=_chat_id, help="open this chat (default: choose from a list)"
    )
    return parser


CHAT_EPILOG = "\n".join(
    [
        "at the prompt:",
        *help_lines(),
        "",
        "logging in: the password is asked for; or set CHATSVC_TOKEN to a bearer token",
        "(from POST /api/auth/login) and nothing is asked.",
    ]
)


def _chat_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a chat id: {text!r}") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"not a port (0 to 65535): {text!r}")
    return port


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default: HOST or 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, help="listen port; 0 takes a free one (default: PORT or 8000)"
    )
    parser.add_argument(
        "--reload", action="store_true", help="restart when the code changes (development)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "serve")  # `chatsvc --port 9000` means `chatsvc serve --port 9000`
    options = parser.parse_args(args)
    if options.command == "chat":  # a client: no database, no logging set-up, few settings
        raise SystemExit(chat_client(options.url, options.user, options.chat))
    try:
        settings = load_settings()
        if options.command == "serve":
            settings.check_serving()
    except ConfigError as exc:
        print(f"chatsvc: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    logging.config.dictConfig(
        logging_config(settings.log_level, json=settings.environment == "production")
    )
    try:
        if options.command == "migrate":
            from chatsvc.database import engine_from_settings

            anyio.run(migrate, engine_from_settings(settings), False)
        elif options.command == "createuser":
            password = _read_password()
            anyio.run(
                create_user, settings, options.username, password, options.staff, options.superuser
            )
        else:
            serve(settings, host=options.host, port=options.port, reload=options.reload)
    except CommandError as exc:
        print(f"chatsvc: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def chat_client(url: str | None, username: str | None, chat_id: uuid.UUID | None) -> int:
    """``chatsvc chat``: returns the exit status."""
    from chatsvc.terminal import client, rest
    from chatsvc.terminal.stdin import read_line

    try:
        base = rest.normalize_url(url or _default_chat_url())
        rest.check_server(base)  # before asking anything: a server down is said at once
        token = os.environ.get("CHATSVC_TOKEN", "").strip()
        if token:
            tokens = rest.Tokens(token)  # an access token alone: it cannot be renewed
        else:
            username = username or read_line("Username: ")
            if username is None:
                raise rest.ClientError("no username given")
            tokens = rest.login(base, username.strip(), _ask_chat_password())
        return client.run(base, tokens, chat_id)
    except rest.ClientError as exc:
        print(f"chatsvc: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"chatsvc: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return client.EXIT_INTERRUPTED


def _default_chat_url() -> str:
    """``http://127.0.0.1:PORT``: of the settings (environment over ``.env``), PORT only."""
    from dotenv import dotenv_values

    port = os.environ.get("PORT") or (
        dotenv_values(".env").get("PORT") if os.path.isfile(".env") else None
    )
    settings = load_settings({"PORT": port} if port else {}, env_file=None)
    return f"http://127.0.0.1:{settings.port}"


def _ask_chat_password() -> str:
    from chatsvc.terminal.stdin import read_line

    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    password = read_line("")
    return "" if password is None else password


async def migrate(engine: Engine[Any], quiet: bool) -> int:
    """Apply pending migrations to ``engine``'s database (``serve`` passes its app's);
    returns how many ran. Piccolo's own report goes to stdout."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from chatsvc.database import use_engine

    output = io.StringIO()
    with use_engine(engine), contextlib.redirect_stdout(output if quiet else sys.stdout):
        result = await run_forwards("all")
    if not result.success:
        if quiet:
            sys.stdout.write(output.getvalue())
        raise CommandError(f"migrations failed: {result.message}")
    return output.getvalue().count("[forwards]... ok")


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise CommandError("the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


async def create_user(
    settings: Settings, username: str, password: str, staff: bool, superuser: bool
) -> None:
    from chatsvc.accounts import Accounts
    from chatsvc.database import connection_pool, engine_from_settings, use_engine
    from chatsvc.wire import RegisterRequest

    try:
        msgspec.convert({"username": username, "password": password}, RegisterRequest)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("`$.", 1)[-1].rstrip("`")
        raise CommandError(f"invalid {field}: {str(exc).split(' - at ')[0]}") from None
    engine = engine_from_settings(settings)
    await migrate(engine, quiet=True)
    accounts = Accounts(
        allow_registration=True, hash_workers=1, hash_rounds=settings.password_hash_rounds
    )
    with use_engine(engine):
        async with connection_pool(engine):
            try:
                user = await accounts.create_user(
                    username, password, staff=staff or superuser, superuser=superuser
                )
            except ChatsvcError as exc:
                raise CommandError(exc.message) from None
    role = "superuser" if superuser else "staff user" if staff else "user"
    print(f"created {role} {user.username!r} (id {user.id})")


#: A bound address as a socket names it: ``(host, port)``.
Address = tuple[str, int]

#: Wildcard binds, and the loopback address that reaches them from this machine.
_EVERY_INTERFACE = {"0.0.0.0": ("127.0.0.1", "IPv4"), "::": ("::1", "IPv6")}  # noqa: S104


def _http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _listening_line(addresses: Sequence[Address]) -> str:
    """Where the server listens, as bound; a wildcard bind says that it means every interface."""
    parts: list[str] = []
    for host, port in addresses:
        part = _http_url(host, port)
        if host in _EVERY_INTERFACE:
            part += f" (every {_EVERY_INTERFACE[host][1]} interface: from another machine, "
            part += "use this one's name or address)"
        parts.append(part)
    return "  Listening  " + ", ".join(parts)


def banner(settings: Settings, addresses: Sequence[Address], context: str | None = None) -> str:
    """The start banner, for the addresses the server listens on (as its sockets name them),
    and the model's ``context`` (its length and the history budget) when known.

    The links use the first address; a wildcard bind is linked through its loopback
    address (127.0.0.1 or ::1), which reaches it from this machine.
    """
    host, port = addresses[0]
    host = _EVERY_INTERFACE.get(host, (host, ""))[0]
    base = _http_url(host, port)
    if settings.llm_provider == "echo":
        provider = (
            "echo (built in, NOT an LLM: it repeats your words; "
            "set OPENAI_API_KEY or OPENAI_BASE_URL for a real model)"
        )
    else:
        target = settings.openai_base_url or "https://api.openai.com/v1"
        provider = f"openai-compatible at {target}, model {settings.model_name}"
    bus = (
        describe_url(settings.event_bus_url)
        if settings.event_bus_url
        else "in-process (one instance; set EVENT_BUS_URL to run several)"
    )
    return "\n".join(
        [
            f"chatsvc {__version__} ({settings.environment})",
            _listening_line(addresses),
            f"  Web client {base}/",
            f"  Admin      {base}/admin/  (staff only: chatsvc createuser NAME --staff)",
            f"  API docs   {base}/docs  (ReDoc: {base}/redoc)",
            f"  OpenAPI    {base}/schema/openapi.json",
            f"  Health     {base}/health  (readiness: {base}/health/ready)",
            f"  WebSocket  ws{base.removeprefix('http')}/ws",
            f"  Database   {describe_url(settings.database_url)}",
            f"  Event bus  {bus}",
            f"  LLM        {provider}",
            *([f"  Context    {context}"] if context and settings.llm_provider != "echo" else []),
        ]
    )


def listening_addresses(servers: Sequence[asyncio.Server]) -> list[Address]:
    """The ``(host, port)`` of every listening socket: the real port of a ``--port 0``."""
    names = [sock.getsockname() for server in servers for sock in server.sockets]
    return [(str(name[0]), int(name[1])) for name in names]  # IPv6 names have 4 parts


def serve(settings: Settings, *, host: str | None, port: int | None, reload: bool) -> None:
    """Serve until stopped; the banner comes once the port accepts connections."""
    from chatsvc.app import create_app
    from chatsvc.database import engine_from_settings

    host = host or settings.host
    port = settings.port if port is None else port
    # The migrations run on the very engine the app serves with (with --reload, on one
    # built from the same settings: the app is built in the worker process).
    app = None if reload else create_app(settings)
    applied = anyio.run(
        migrate, app.services.engine if app else engine_from_settings(settings), True
    )
    log.info(
        "database: %s", f"{applied} migrations applied" if applied else "migrations up to date"
    )
    if app is None:
        config = _server_config("chatsvc.app:create_app", settings, host, port, reload=True)
        _serve_reloading(config, settings)
        return
    _GracefulServer(_server_config(app, settings, host, port, reload=False), settings, app).run()


def _server_config(
    app: ChatsvcApp | str, settings: Settings, host: str, port: int, *, reload: bool
) -> uvicorn.Config:
    """uvicorn's configuration for serving ``app`` (an app, or with ``--reload`` the factory's
    import path)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # A factory path is imported and called in the worker process (--reload).
        factory=reload,
        reload=reload,
        log_config=logging_config(settings.log_level, json=settings.environment == "production"),
        ws_max_size=settings.max_frame_bytes,
        # Token frames are small; compressing each costs more CPU than it saves bytes,
        # and zlib state per socket costs memory (docs/performance.md).
        ws_per_message_deflate=False,
        proxy_headers=True,
        # Open SSE streams would otherwise hold a stop until their replies end. uvicorn
        # annotates this int but hands it to asyncio.wait_for, which takes seconds as float.
        timeout_graceful_shutdown=settings.shutdown_timeout,  # pyright: ignore[reportArgumentType]
    )


def _serve_reloading(config: uvicorn.Config, settings: Settings) -> None:
    """``--reload``: what ``uvicorn.run`` does, with a server of ours in the worker process,
    which prints the banner each time it listens (after every restart)."""
    from uvicorn.supervisors import ChangeReload

    sock = config.bind_socket()
    with contextlib.suppress(KeyboardInterrupt):
        ChangeReload(config, target=_BannerServer(config, settings).run, sockets=[sock]).run()


def _freeze_startup_heap() -> None:
    """Leave what start-up built (modules, the app, its services) out of garbage collection.

    Those objects live as long as the process. Left in, every full collection
    walks them again: under a burst of sends such a collection held the event
    loop for 110-160 ms, which every stream felt (docs/performance.md). A decision
    for the process that serves, not for the app: an app built inside another host
    does not freeze its host's heap.
    """
    gc.collect()
    gc.freeze()


class _BannerServer(uvicorn.Server):
    """uvicorn's server, printing the start banner once it listens: with the address its
    sockets are bound to (the real port of ``--port 0``), and only when a client can
    connect (issue 13, point 7)."""

    def __init__(
        self, config: uvicorn.Config, settings: Settings, *, freeze_heap: bool = True
    ) -> None:
        super().__init__(config)
        self.chatsvc_settings = settings
        #: A process that serves this one app freezes what its start built; one that
        #: builds many apps (the test suite's in-process servers) does not.
        self.freeze_heap = freeze_heap

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # exits the process when it cannot listen
        if self.freeze_heap:
            _freeze_startup_heap()
        addresses = listening_addresses(self.servers)
        print(banner(self.chatsvc_settings, addresses, self.context_line()), flush=True)

    def context_line(self) -> str | None:
        return None


class _GracefulServer(_BannerServer):
    """uvicorn's server, stopping the running replies first.

    uvicorn closes sockets (1012), waits for open requests, and only then runs
    the app's shutdown; replies would stream on, unseen, in between. Here they
    are interrupted and stored before any socket is closed.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        settings: Settings,
        app: ChatsvcApp,
        *,
        freeze_heap: bool = True,
    ) -> None:
        super().__init__(config, settings, freeze_heap=freeze_heap)
        self.chatsvc_app = app

    def context_line(self) -> str | None:
        """The model's context length and history budget, as the app found them at start."""
        return self.chatsvc_app.services.budgets.describe(self.chatsvc_settings.model_name)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        with anyio.move_on_after(self.config.timeout_graceful_shutdown or 10):
            stopped = await self.chatsvc_app.services.generations.interrupt_all()
            if stopped:
                log.info("stopped %d running replies as interrupted", stopped)
        await super().shutdown(sockets)
