"""The in-process tier: an app built by ``create_app`` served by a real uvicorn in a thread.

For what needs no process of its own (start, stop, crash and multi-instance tests keep
subprocess servers): no interpreter start, no import of the app per server, which is
most of what a ``chatsvc serve`` subprocess takes to answer ``/health`` (8 s measured on
the 2-core CI machine under load; more under coverage). ``serve_app`` (tests/conftest.py)
starts them for a test, ``start_app_server`` for a module's fixture.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from chatsvc.app import ChatsvcApp, create_app
from chatsvc.cli import _GracefulServer, banner, listening_addresses, migrate  # pyright: ignore[reportPrivateUsage]
from chatsvc.logs import JsonFormatter, RedactSecrets, TextFormatter
from chatsvc.quota_rules import Clock
from chatsvc.settings import Settings, load_settings
from tests.support.databases import Database
from tests.support.servers import Reachable, server_environment

START_SECONDS = 60
#: The loggers ``chatsvc.logs.logging_config`` sets the level of in a served process.
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "chatsvc")


def _config(app: Any, settings: Settings | None) -> uvicorn.Config:
    """What ``chatsvc serve`` gives uvicorn (``chatsvc.cli._server_config``), on a free port and
    without its logging setup, which would reconfigure the test process's logging."""
    if settings is None:
        return uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        lifespan="on",
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        proxy_headers=True,
        timeout_graceful_shutdown=settings.shutdown_timeout,  # pyright: ignore[reportArgumentType]
    )


@contextmanager
def serving(
    app: Any,
    *,
    settings: Settings | None = None,
    database: Database | None = None,
    log: TextIO | None = None,
) -> Generator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its URL.

    With ``settings`` (``app``'s), it is served as ``chatsvc serve`` serves it: its
    uvicorn settings, and its server class, which stops running replies first and prints
    the start banner (also written to ``log``, as a served process's log has it). With
    ``database``, its migrations are applied first, in the server's thread: the test's
    own loop may be running in this one.
    """
    config = _config(app, settings)
    # `freeze_heap=False`: freezing is right for a process that serves one app. In a test
    # process that builds many it would leak (what a test or an earlier app left in cycles
    # would never be collected) and cost a full collection of the worker's heap per start.
    server = (
        uvicorn.Server(config)
        if settings is None
        else _GracefulServer(config, settings, app, freeze_heap=False)
    )
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            if database is not None:
                await migrate(app.services.engine, True)
            await server.serve()
        except BaseException as exc:
            failure.append(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:  # uvicorn sets a flag, nothing to wait on
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the app did not start: {failure or 'see the log above'}")
        time.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    if log is not None and isinstance(server, _GracefulServer):
        addresses = listening_addresses(server.servers)
        log.write(banner(server.chatsvc_settings, addresses, server.context_line()) + "\n")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_SECONDS)


@contextmanager
def capturing_logs(settings: Settings) -> Iterator[io.StringIO]:
    """The lines the app logs while it serves, formatted and scrubbed as ``chatsvc serve``
    writes them (``chatsvc.logs.logging_config``). The loggers are the process's: while
    several apps serve in process, each one's log holds the lines of all of them."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    formatter = JsonFormatter if settings.environment == "production" else TextFormatter
    handler.setFormatter(
        formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    handler.addFilter(RedactSecrets())
    level = settings.log_level.upper()
    handler.setLevel(level)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield text
    finally:
        root.removeHandler(handler)
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


@dataclass
class AppServer(Reachable):
    """A ``Server`` served in this process: the same ``url``, ``client``, ``ws_url``,
    ``log`` and ``stop``, and no process (no signals, no ``/proc``)."""

    url: str
    db: Database
    cwd: Path
    app: ChatsvcApp
    settings: Settings
    _log: io.StringIO
    _running: ExitStack = field(default_factory=ExitStack)

    def log(self) -> str:
        return self._log.getvalue()

    def stop(self) -> None:
        self._running.close()


def start_app_server(
    db: Database, cwd: Path, clock: Clock | None = None, **settings: str
) -> AppServer:
    """``start_server`` in this process: the same settings, by their variable names, over
    the same defaults (``tests.support.servers.server_environment``); ``clock``: the time
    the app's token budgets see (``create_app(clock=...)``)."""
    chosen = load_settings(server_environment(db, settings), env_file=None)
    app = create_app(chosen) if clock is None else create_app(chosen, clock=clock)
    with ExitStack() as running:
        text = running.enter_context(capturing_logs(chosen))
        url = running.enter_context(serving(app, settings=chosen, database=db, log=text))
        return AppServer(url, db, cwd, app, chosen, text, running.pop_all())
