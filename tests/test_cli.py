"""The ``chatsvc`` command: help, configuration errors, serve on defaults, createuser."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from chatsvc.settings import describe_url, describe_variables
from tests.support import (
    PASSWORD,
    Database,
    clean_environment,
    register_and_login,
    run_chatsvc,
    start_server,
    unique_username,
)
from tests.support.http import tls


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"], ["createuser"]])
def test_help_everywhere(tmp_path: Path, command: list[str]) -> None:
    result = run_chatsvc(*command, "--help", cwd=tmp_path, env=clean_environment())
    assert result.returncode == 0, result.stderr
    assert "usage: chatsvc" in result.stdout
    if command in ([], ["serve"]):
        for name, _, _ in describe_variables():
            assert name in result.stdout


def test_python_dash_m_and_version(tmp_path: Path) -> None:
    result = run_chatsvc("--version", cwd=tmp_path, env=clean_environment())
    assert result.returncode == 0
    assert result.stdout.startswith("chatsvc ")


@pytest.mark.parametrize(
    ("variable", "value", "expects"),
    [
        ("PORT", "eighty", "an integer"),
        ("PORT", "70000", "<= 65535"),
        ("ENVIRONMENT", "staging", "development, test, production"),
        ("ALLOW_REGISTRATION", "perhaps", "true or false"),
        ("JWT_TTL_SECONDS", "1", ">= 2"),
        ("REFRESH_TOKEN_TTL_SECONDS", "30", ">= 60"),
        ("DATABASE_URL", "mysql://localhost/db", "sqlite:///"),
        ("DATABASE_URL", "postgresq://chatsvc:s3cret-pw@db/chatsvc", "postgresql://"),
        ("OPENAI_BASE_URL", "localhost:11434", "http"),
        ("OPENAI_BASE_URL", "https://proxy:s3cret-pw@llm.example/v1", "without credentials"),
        ("OPENAI_BASE_URL", "https://llm.example/v1?api-key=s3cret-pw", "without a query string"),
        ("OPENAI_BASE_URL", "http://[::1/v1", "an http:// or https:// URL"),
        ("EVENT_BUS_URL", "redis//:s3cret-pw@cache:6379/0", "redis://"),
        ("JWT_SECRET", "too-short", "at least 32 characters"),
        ("MAX_CONCURRENT_GENERATIONS", "0", ">= 1"),
        ("LLM_STREAM_IDLE_TIMEOUT", "-3", "> 0"),
        ("LOG_LEVEL", "loud", "debug, info, warning, error"),
    ],
)
def test_bad_setting_prints_one_clear_line(
    tmp_path: Path, variable: str, value: str, expects: str
) -> None:
    result = run_chatsvc("serve", cwd=tmp_path, env=clean_environment(**{variable: value}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert expects in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    if variable == "JWT_SECRET":
        assert value not in lines[0]  # secrets are never echoed
    assert "s3cret-pw" not in result.stderr + result.stdout  # nor a URL's password
    assert not (tmp_path / "chatsvc.db").exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://chatsvc:pw@db:5432/chatsvc", "postgresql://chatsvc:***@db:5432/chatsvc"),
        ("redis://:p@ss@cache:6379/0", "redis://:***@cache:6379/0"),  # redis-py takes the last @
        ("redis://cache:6379/0?client_name=a@b", "redis://cache:6379/0?client_name=a@b"),
        (
            "postgresql://u@db/c?password=pw&sslmode=require",
            "postgresql://u@db/c?password=***&sslmode=require",
        ),
        ("https://llm.example/v1?api-key=k", "https://llm.example/v1?api-key=***"),
        ("sqlite:///chatsvc.db", "sqlite:///chatsvc.db"),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert describe_url(url) == shown


def test_production_refuses_to_start_without_a_jwt_secret(tmp_path: Path) -> None:
    result = run_chatsvc("serve", cwd=tmp_path, env=clean_environment(ENVIRONMENT="production"))
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_createuser_and_migrate_need_no_jwt_secret_in_production(tmp_path: Path) -> None:
    env = clean_environment(ENVIRONMENT="production")
    assert run_chatsvc("migrate", cwd=tmp_path, env=env).returncode == 0
    created = run_chatsvc(
        "createuser",
        "root_admin",
        "--superuser",
        cwd=tmp_path,
        env=env,
        stdin="correct horse battery\n",
    )
    assert created.returncode == 0, created.stderr
    assert "created superuser 'root_admin'" in created.stdout


@pytest.mark.parametrize(
    "secret",
    [
        "change-me-change-me-change-me-change-me",
        "my-super-secret-jwt-signing-key-for-prod",
        "abababababababababababababababababababab",
    ],
)
def test_production_refuses_a_placeholder_secret(tmp_path: Path, secret: str) -> None:
    env = clean_environment(ENVIRONMENT="production", JWT_SECRET=secret)
    result = run_chatsvc("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr
    assert "placeholder" in result.stderr
    assert secret not in result.stderr


def test_production_refuses_access_tokens_shorter_than_a_minute(tmp_path: Path) -> None:
    secret = "Zq8-Lr2xTp5vKw9YbN3cHj7GdF4sMa6E"  # random-looking: not a placeholder
    env = clean_environment(ENVIRONMENT="production", JWT_SECRET=secret, JWT_TTL_SECONDS="5")
    result = run_chatsvc("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "JWT_TTL_SECONDS" in result.stderr
    assert "at least 60 in production" in result.stderr


def test_settings_come_from_a_dot_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# local settings\nPORT=not-a-port\n")
    result = run_chatsvc("serve", cwd=tmp_path, env=clean_environment())
    assert result.returncode == 2
    assert "PORT='not-a-port'" in result.stderr


def test_environment_wins_over_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=not-a-port\n")
    result = run_chatsvc("serve", cwd=tmp_path, env=clean_environment(PORT="99999"))
    assert "PORT='99999'" in result.stderr


def test_serve_on_an_empty_directory_uses_embedded_sqlite(tmp_path: Path) -> None:
    """``python -m chatsvc`` with no command serves, on the embedded SQLite. On port 0:
    a port found free and then named could be taken meanwhile by another worker's
    server; the banner names the one it took."""
    with _serving(tmp_path, "--port", "0") as (lines, output):
        port = urlsplit(_line_starting("  Listening ", lines, output).split()[1]).port
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5, verify=tls())
        assert response.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", verify=tls())
        assert ready.json()["database"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/docs", verify=tls()).status_code == 200
        assert (tmp_path / "chatsvc.db").is_file()
    text = "".join(output)
    assert f"  Listening  http://127.0.0.1:{port}\n" in text
    assert f"http://127.0.0.1:{port}/docs" in text
    assert f"http://127.0.0.1:{port}/admin/" in text
    assert f"http://127.0.0.1:{port}/health" in text
    assert "localhost" not in text
    assert "sqlite:///chatsvc.db" in text
    assert "echo" in text
    assert "NOT an LLM" in text
    assert "tokens will not survive a restart" in text
    # Nothing that says less than it seems: no model server to state a context, one
    # instance with no bus to name, and not Piccolo's "Running Sqlite version 3.4".
    assert ": context " not in text
    assert "event bus: memory\n" in text
    assert "namespace" not in text
    assert "Running Sqlite" not in text


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _lines(process: subprocess.Popen[str]) -> Iterator[str]:
    """The process's output lines as they come; a reader thread, so a wait can time out."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
        yield line


@contextmanager
def _serving(cwd: Path, *args: str) -> Generator[tuple[Iterator[str], list[str]]]:
    """``python -m chatsvc ARGS`` for the length of the block: its output lines as they
    come, and the list of those read, to the end of the output once the block stopped it."""
    output: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "chatsvc", *args],
        cwd=cwd,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        lines = _lines(process)
        try:
            yield lines, output
        finally:
            process.terminate()
            output.extend(lines)


def _line_starting(prefix: str, lines: Iterator[str], output: list[str]) -> str:
    """The first line that starts with ``prefix``; every line read joins ``output``."""
    for line in lines:
        output.append(line)
        if line.startswith(prefix):
            return line
    pytest.fail("no banner:\n" + "".join(output))


@pytest.mark.parametrize(
    ("options", "listening", "linked"),
    [
        (["--host", "127.0.0.1"], "http://127.0.0.1:{port}", "127.0.0.1"),
        (
            ["--host", "0.0.0.0"],
            "http://0.0.0.0:{port} (every IPv4 interface",
            "127.0.0.1",
        ),
        pytest.param(
            ["--host", "::1"],
            "http://[::1]:{port}",
            "[::1]",
            marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback"),
        ),
        (["--reload"], "http://127.0.0.1:{port}", "127.0.0.1"),
    ],
    ids=["loopback", "every-interface", "ipv6", "reload"],
)
def test_the_banner_comes_once_the_server_listens_and_names_its_real_address(
    tmp_path: Path, options: list[str], listening: str, linked: str
) -> None:
    """Issue 13, point 7: `--port 0` shows the port picked, the address is the one bound
    (not `localhost`), and the banner's link is connectable the moment it is printed."""
    with _serving(tmp_path, "serve", "--port", "0", *options) as (lines, output):
        line = _line_starting("  Web client ", lines, output)
        url = urlsplit(line.split()[2])
        assert url.port, line
        # Right after the line, with no retry: the port accepts connections already.
        with socket.create_connection((url.hostname or "", url.port), timeout=5):
            pass
        health = httpx.get(f"{url.scheme}://{url.netloc}/health", timeout=5, verify=tls())
        assert health.json()["status"] == "ok"
    text = "".join(output)
    assert url.port != 8000  # the default port was not taken instead of a free one
    assert url.netloc == f"{linked}:{url.port}"
    assert f"  Listening  {listening.format(port=url.port)}" in text
    assert f"  WebSocket  ws://{linked}:{url.port}/ws\n" in text
    assert "localhost" not in text


def test_createuser_from_stdin_then_log_in(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    db = make_database(engine)
    env = clean_environment(DATABASE_URL=db.url)
    staff = unique_username("staff")
    created = run_chatsvc("createuser", staff, "--staff", cwd=tmp_path, env=env, stdin=PASSWORD)
    assert created.returncode == 0, created.stderr
    assert staff in created.stdout
    rows = db.query("SELECT admin, superuser, active FROM piccolo_user WHERE username = ?", staff)
    assert [tuple(bool(v) for v in r.values()) for r in rows] == [(True, False, True)]

    duplicate = run_chatsvc("createuser", staff, cwd=tmp_path, env=env, stdin=PASSWORD)
    assert duplicate.returncode == 1
    assert "already taken" in duplicate.stderr

    weak = run_chatsvc("createuser", unique_username(), cwd=tmp_path, env=env, stdin="short")
    assert weak.returncode == 1
    assert "password" in weak.stderr

    server = start_server(db, tmp_path)
    try:
        with server.client() as client:
            login = client.post("/api/auth/login", json={"username": staff, "password": PASSWORD})
        assert login.status_code == 200, login.text
    finally:
        server.stop()


def test_a_developers_exported_setting_does_not_reach_test_servers(
    make_database: Callable[..., Database], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every setting is cleared from a test server's environment, not a hand-kept list."""
    monkeypatch.setenv("MAX_CHATS_PER_USER", "1")
    server = start_server(make_database("sqlite"), tmp_path)
    try:
        with register_and_login(server).client() as client:
            created = [client.post("/api/chats/", json={}).status_code for _ in range(2)]
        assert created == [201, 201]
    finally:
        server.stop()
