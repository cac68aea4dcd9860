"""Test fixtures: real chatsvc servers (subprocesses on loopback) on SQLite and PostgreSQL.

Every test that touches the database takes the ``engine`` fixture (directly or
through ``server``), which runs it once per engine. ``--db`` picks the engines:
``both`` (the default) runs PostgreSQL when it is reachable; in CI (``CI`` set)
or with ``--db postgres``, an unreachable PostgreSQL is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import piccolo.engine.sqlite  # noqa: F401  (registers Piccolo's SQLite adapters for raw SQL)
import pytest
from websockets.sync.client import ClientConnection, connect

from chatsvc.settings import variable_names
from tests.fake_openai import FakeOpenAI

pytest_plugins = ("tests.browser",)  # the `browser` and `page` fixtures (headless Chromium)

PG_ADMIN_URL = os.environ.get(
    "CHATSVC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
JWT_SECRET = "test-secret-" + "x" * 40
UPSTREAM_KEY = "sk-test-upstream-key-never-logged"
HIGH_LIMITS = {
    "RATE_LIMIT_PER_MINUTE": "100000",
    "LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "WS_FRAMES_PER_SECOND": "10000",
    "MAX_SOCKETS_PER_USER": "1000",
}
PASSWORD = "correct horse battery"
#: The model test servers offer besides their MODEL_NAME, ``fake-model``.
OTHER_MODEL = "fake-model-large"
SERVER_START_SECONDS = 60

#: Settings variables a developer may have exported; servers under test start without them.
CHATSVC_VARIABLES = variable_names()


# --- engine selection ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgres", "both"),
        default=os.environ.get("CHATSVC_TEST_DB", "both"),
        help="database engines to run the database tests on (default: both)",
    )


def _postgres_reachable() -> str | None:
    """``None`` when PostgreSQL answers, else why not."""

    async def probe() -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    choice = config.getoption("--db")
    engines = ["sqlite", "postgres"] if choice == "both" else [choice]
    config.stash[_NOTE] = ""
    if "postgres" in engines:
        problem = _postgres_reachable()
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


# --- databases ------------------------------------------------------------------------


def run_async(coro: Any) -> Any:
    """Run a coroutine to the end, also from a test where a loop runs (Playwright's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class Database:
    """A real database a test can look into (raw SQL with ``?`` placeholders)."""

    engine: str
    url: str

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        if self.engine == "sqlite":
            connection = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            connection.row_factory = sqlite3.Row
            try:
                with connection:
                    return [dict(row) for row in connection.execute(sql, params)]
            finally:
                connection.close()
        numbered = sql
        for index in range(1, len(params) + 1):
            numbered = numbered.replace("?", f"${index}", 1)

        async def run() -> list[dict[str, Any]]:
            connection = await asyncpg.connect(self.url)
            try:
                return [dict(row) for row in await connection.fetch(numbered, *params)]
            finally:
                await connection.close()

        return run_async(run())


@pytest.fixture(scope="session")
def make_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Database]]:
    """Creates empty databases (an SQLite file, or a fresh PostgreSQL database)."""
    created: list[str] = []

    def make(engine: str) -> Database:
        if engine == "sqlite":
            path = tmp_path_factory.mktemp("db") / "chatsvc.db"
            return Database(engine, f"sqlite:///{path}")
        name = f"chatsvc_test_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        run_async(create())
        created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return Database(engine, f"{base}/{name}")

    yield make

    async def drop_all() -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            for name in created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    if created:
        run_async(drop_all())


# --- servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHATSVC_VARIABLES}
    env.update(overrides)
    return env


def run_chatsvc(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m chatsvc ARGS`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "chatsvc", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Server:
    """A running ``chatsvc serve`` process."""

    url: str
    db: Database
    log_path: Path
    process: subprocess.Popen[bytes]
    cwd: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        """The server process's resident memory, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    db: Database, cwd: Path, *, python_args: Sequence[str] = ("-m", "chatsvc"), **settings: str
) -> Server:
    """Start ``chatsvc serve`` on a free port and wait until ``/health`` answers.

    ``python_args`` replaces ``-m chatsvc`` (the benchmark runs the server under a profiler).
    """
    port = free_port()
    defaults = {"DATABASE_URL": db.url, "ENVIRONMENT": "test", "JWT_SECRET": JWT_SECRET}
    # The suite makes many requests from one address; the limit tests lower these.
    env = clean_environment(**{**defaults, **HIGH_LIMITS, **settings})
    log_path = cwd / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *python_args, "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", db, log_path, process, cwd)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chatsvc exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"chatsvc did not answer /health in time:\n{server.log()}")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible upstream every test server streams from."""
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def upstream_settings(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "LLM_MAX_RETRIES": "0",
        "MODEL_NAME": "fake-model",
        "MODELS": f"fake-model,{OTHER_MODEL}",
        "CHECKPOINT_SECONDS": "0.3",
    }


@pytest.fixture(scope="session")
def server(
    engine: str,
    make_database: Callable[[str], Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[Server]:
    """One shared server per engine for the whole session, streaming from ``fake_llm``."""
    running = start_server(
        make_database(engine),
        tmp_path_factory.mktemp(f"server-{engine}"),
        **upstream_settings(fake_llm),
    )
    yield running
    running.stop()


@pytest.fixture
def spawn_server(
    engine: str,
    make_database: Callable[[str], Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Server]]:
    """Starts extra servers with other settings, stopped after the test."""
    started: list[Server] = []

    def spawn(**settings: str) -> Server:
        running = start_server(make_database(engine), tmp_path_factory.mktemp("server"), **settings)
        started.append(running)
        return running

    yield spawn
    for running in started:
        running.stop()


# --- users ----------------------------------------------------------------------------


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str
    server: Server = field(repr=False)

    def client(self) -> httpx.Client:
        return self.server.client(self.token)


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def register_and_login(server: Server, username: str | None = None) -> User:
    username = username or unique_username()
    with server.client() as client:
        created = client.post(
            "/api/auth/register", json={"username": username, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        login = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
    return User(created.json()["id"], username, PASSWORD, login.json()["access_token"], server)


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


def insert_message(
    db: Database,
    chat_id: str,
    content: str,
    *,
    role: str = "user",
    created_at: datetime | None = None,
) -> str:
    """Store a message directly (the generation engine, which writes them, comes later)."""
    message_id = uuid.uuid4()
    stamp = created_at or datetime.now(UTC)
    # It follows the chat's newest message, as the server links a message it stores.
    db.query(
        "INSERT INTO message (id, chat, parent, role, content, status, created_at) "
        "VALUES (?, ?, (SELECT id FROM message WHERE chat = ? "
        "ORDER BY created_at DESC, id DESC LIMIT 1), ?, ?, 'complete', ?)",
        message_id,
        uuid.UUID(chat_id),
        uuid.UUID(chat_id),
        role,
        content,
        stamp,
    )
    return str(message_id)


TERMINAL = ("done", "aborted", "error")


class Socket:
    """A real WebSocket client of ``/ws``, with helpers to read events."""

    def __init__(self, user: User) -> None:
        self.user = user
        self._connection = connect(f"{user.server.ws_url}?token={user.token}", max_size=None)
        self.ws: ClientConnection = self._connection.__enter__()
        #: Every frame received, also those that ``start`` and ``until`` passed over.
        self.received: list[dict[str, Any]] = []
        self.ready = self.recv()
        assert self.ready["type"] == "ready", self.ready

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def send_raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def recv(self, timeout: float = 20) -> dict[str, Any]:
        frame = json.loads(self.ws.recv(timeout=timeout))
        self.received.append(frame)
        return frame

    def until(self, stop: Callable[[dict[str, Any]], bool], timeout: float = 30) -> list[dict]:
        """Every frame up to and including the first one ``stop`` accepts."""
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            frames.append(self.recv(timeout=max(0.1, deadline - time.monotonic())))
            if stop(frames[-1]):
                return frames

    def until_end(self, task_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        return self.until(lambda f: f.get("task_id") == task_id and f["type"] in TERMINAL, timeout)

    def start(self, content: str, **fields: Any) -> dict[str, Any]:
        """Send a message and read up to its ``started`` event."""
        self.send(action="send_message", content=content, **fields)
        frames = self.until(lambda f: f["type"] in ("started", "error"))
        assert frames[-1]["type"] == "started", frames
        return frames[-1]

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def tokens_of(frames: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "token" and f["task_id"] == task_id]
