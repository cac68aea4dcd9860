"""Fixtures and hooks: real chatsvc servers (subprocesses on loopback) on SQLite and PostgreSQL.

Every test that touches the database takes the ``engine`` fixture (directly or
through ``server``), which runs it once per engine. ``--db`` picks the engines:
``both`` (the default) runs PostgreSQL when it is reachable; in CI (``CI`` set)
or with ``--db postgres``, an unreachable PostgreSQL is an error, never a skip.
The helpers these fixtures use, and tests import, are in ``tests/support/``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatsvc.quota_rules import Clock
from tests.fake_openai import FakeOpenAI
from tests.support import (
    AppServer,
    Database,
    Server,
    User,
    register_and_login,
    start_app_server,
    unique_username,
)
from tests.support.databases import (
    PG_ADMIN_URL,
    copy_sqlite,
    create_postgres_database,
    drop_postgres_databases,
    migrate_database,
    postgres_reachable,
    run_async,
)
from tests.support.servers import start_server, upstream_settings

pytest_plugins = ("tests.browser",)  # the `browser` and `page` fixtures (headless Chromium)


# --- engine selection ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgres", "both"),
        default=os.environ.get("CHATSVC_TEST_DB", "both"),
        help="database engines to run the database tests on (default: both)",
    )


def pytest_configure(config: pytest.Config) -> None:
    choice = str(config.getoption("--db"))
    engines: list[str] = ["sqlite", "postgres"] if choice == "both" else [choice]
    config.stash[_NOTE] = ""
    if "postgres" in engines:
        problem = asyncio.run(postgres_reachable())
        if problem is not None:
            if os.environ.get("CI") or choice == "postgres":
                raise pytest.UsageError(
                    f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({problem}); "
                    "CI runs every database test on it"
                )
            engines.remove("postgres")
            config.stash[_NOTE] = f"PostgreSQL unreachable ({problem}): SQLite only"
    config.stash[_ENGINES] = engines


_ENGINES = pytest.StashKey[list[str]]()
_NOTE = pytest.StashKey[str]()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers of ``-n auto`` (in the addopts): three per core. A test spends much of its
    time waiting on servers, sockets and paced tokens, so one worker per core leaves the
    cores idle. On a 2-core machine, once servers started as forks of a warm interpreter
    (``tests/support/warm_start.py``), the whole run took 417 s with four workers and
    374-425 s with six (no coverage); ``--dist worksteal`` hands a worker that is done the
    tests another still has queued. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides this."""
    return 3 * (os.cpu_count() or 1)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"chatsvc database engines: {', '.join(config.stash[_ENGINES])}"]
    if config.stash[_NOTE]:
        lines.append(f"WARNING: {config.stash[_NOTE]}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if config.stash[_NOTE]:  # repeated at the end, where a quiet run still shows it
        terminalreporter.write_line(f"WARNING: {config.stash[_NOTE]}", yellow=True, bold=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        engines = metafunc.config.stash[_ENGINES]
        if metafunc.definition.get_closest_marker("postgres_only"):
            engines = [e for e in engines if e == "postgres"]
        metafunc.parametrize("engine", engines, indirect=True, scope="session")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


# --- databases and servers ------------------------------------------------------------


@pytest.fixture(scope="session")
def make_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Database]]:
    """Creates databases: empty (an SQLite file, or a fresh PostgreSQL database), or with
    ``migrated=True`` a copy of one migrated once per engine and session (what a server
    would migrate at start, ~1 s, is done; the start still checks it)."""
    created: list[str] = []
    templates: dict[str, Database] = {}

    def make(engine: str, migrated: bool = False) -> Database:
        if migrated and engine not in templates:
            templates[engine] = make(engine)
            migrate_database(templates[engine])
        if engine == "sqlite":
            path = tmp_path_factory.mktemp("db") / "chatsvc.db"
            if migrated:
                return copy_sqlite(templates[engine], path)
            return Database(engine, f"sqlite:///{path}")
        template = templates[engine].url if migrated else None
        url = run_async(create_postgres_database(template))
        created.append(url)
        return Database(engine, url)

    yield make
    if created:
        run_async(drop_postgres_databases(created))


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible upstream every test server streams from."""
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def server(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[Server]:
    """One shared server per engine for the whole session, streaming from ``fake_llm``."""
    running = start_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp(f"server-{engine}"),
        **upstream_settings(fake_llm),
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def echo_server(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A server with the built-in echo provider (no upstream): it repeats each message."""
    running = start_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp(f"echo-{engine}"),
        ECHO_TOKEN_DELAY="0.01",
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def titled(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[Server]:
    """A server whose model names chats after their first reply (`AUTO_TITLES=true`),
    streaming from ``fake_llm``."""
    running = start_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp(f"titles-{engine}"),
        **upstream_settings(fake_llm),
        AUTO_TITLES="true",
    )
    yield running
    running.stop()


@pytest.fixture
def spawn_server(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Server]]:
    """Starts extra servers with other settings, stopped after the test."""
    started: list[Server] = []

    def spawn(**settings: str) -> Server:
        running = start_server(
            make_database(engine, migrated=True), tmp_path_factory.mktemp("server"), **settings
        )
        started.append(running)
        return running

    yield spawn
    for running in started:
        running.stop()


@pytest.fixture
def serve_app(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., AppServer]]:
    """``spawn_server`` in the test process: apps built by ``create_app`` with these settings
    (by variable name, over ``start_server``'s defaults) and ``clock`` if given, each served
    by uvicorn in a thread, stopped after the test. For servers that need no process of
    their own."""
    started: list[AppServer] = []

    def serve(clock: Clock | None = None, **settings: str) -> AppServer:
        cwd = tmp_path_factory.mktemp("app")
        running = start_app_server(make_database(engine, migrated=True), cwd, clock, **settings)
        started.append(running)
        return running

    yield serve
    for running in started:
        running.stop()


# --- users ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def alice(server: Server) -> User:
    return register_and_login(server, unique_username("alice"))


@pytest.fixture(scope="session")
def bob(server: Server) -> User:
    return register_and_login(server, unique_username("bob"))


@pytest.fixture
def fresh_user(server: Server) -> User:
    """A user with no chats yet (for tests that count a whole list)."""
    return register_and_login(server)
