"""``chatsvc`` processes under test: commands run to completion and servers on loopback ports."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from chatsvc.settings import MIN_PASSWORD_HASH_ROUNDS
from tests.fake_openai import FakeOpenAI
from tests.support import warm_start
from tests.support.databases import Database
from tests.support.environment import clean_environment
from tests.support.http import tls
from tests.support.warm_start import WarmProcess

JWT_SECRET = "test-secret-" + "x" * 40
UPSTREAM_KEY = "sk-test-upstream-key-never-logged"
#: ``PASSWORD_HASH_ROUNDS`` of test servers: the least the settings take.
TEST_HASH_ROUNDS = MIN_PASSWORD_HASH_ROUNDS
HIGH_LIMITS = {
    "RATE_LIMIT_PER_MINUTE": "100000",
    "LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "WS_FRAMES_PER_SECOND": "10000",
    "MAX_SOCKETS_PER_USER": "1000",
}
#: The model test servers offer besides their MODEL_NAME, ``fake-model``.
OTHER_MODEL = "fake-model-large"
SERVER_START_SECONDS = 60
#: The access token lifetime of test servers (a day; the default is 15 minutes).
TEST_ACCESS_SECONDS = 86_400
#: The start banner's line with the address a server listens on (``chatsvc.cli.banner``).
_LISTENING = re.compile(rb"Listening +http://127\.0\.0\.1:(\d+)")


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound and
    never listening. (A port merely free when asked can be taken a moment later by another
    worker's server, which then answers.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


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


class Reachable:
    """A server's ``url``, and what a test reaches it with: HTTP and ``/ws``."""

    url: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=tls())

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@dataclass
class Server(Reachable):
    """A running ``chatsvc serve`` process."""

    url: str
    db: Database
    log_path: Path
    process: subprocess.Popen[bytes] | WarmProcess
    cwd: Path

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


def server_environment(db: Database, settings: Mapping[str, str]) -> dict[str, str]:
    """The variables a test server is given: the suite's defaults, then ``settings``."""
    defaults = {"DATABASE_URL": db.url, "ENVIRONMENT": "test", "JWT_SECRET": JWT_SECRET}
    # Titles by the model are one more upstream request and one more event after a chat's
    # first reply: tests that count requests or frames would see them. Their tests turn
    # them on (tests/test_titles.py).
    defaults["AUTO_TITLES"] = "false"
    # The session's users (`alice`, `bob`) log in once and keep that access token for the
    # whole run, which lasts longer than the default 15 minutes; the tests of expiry and
    # renewal set their own lifetime (tests/test_sessions.py, test_web_sessions.py).
    defaults["JWT_TTL_SECONDS"] = str(TEST_ACCESS_SECONDS)
    # Hashing a password at the production rounds (600,000) costs 0.15-0.8 s of CPU, and the
    # suite registers and logs in users by the thousand: the least rounds the settings take
    # keep the same code path at a fraction of the cost. The tests of the rounds themselves
    # and of a full hashing queue set their own (tests/test_passwords.py,
    # test_login_limits.py).
    defaults["PASSWORD_HASH_ROUNDS"] = str(TEST_HASH_ROUNDS)
    # The suite makes many requests from one address; the limit tests lower these.
    chosen = {**defaults, **HIGH_LIMITS, **settings}
    if chosen["ENVIRONMENT"] == "production" and "PASSWORD_HASH_ROUNDS" not in settings:
        del chosen["PASSWORD_HASH_ROUNDS"]  # production refuses fewer rounds than its own
    return chosen


def start_server(
    db: Database,
    cwd: Path,
    *,
    python_args: Sequence[str] | None = None,
    fresh_interpreter: bool = False,
    **settings: str,
) -> Server:
    """Start ``chatsvc serve`` on a port of its own and wait until ``/health`` answers.

    The server binds port 0 and its start banner names the port it got: a port found free
    here and bound by the server a second or two later could be taken meanwhile by another
    worker's server. The server is a fork of the worker's warm interpreter
    (``tests.support.warm_start``), or with ``fresh_interpreter`` a new ``python -m chatsvc``
    process; ``python_args`` replaces ``-m chatsvc`` in one (the benchmark runs the server
    under a profiler).
    """
    env = clean_environment(**server_environment(db, settings))
    log_path = cwd / f"server-{uuid.uuid4().hex[:12]}.log"
    argv = ["serve", "--port", "0"]
    process: subprocess.Popen[bytes] | WarmProcess
    if python_args is None and not fresh_interpreter:
        process = warm_start.start(argv, env, cwd, log_path)
    else:
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, *(python_args or ("-m", "chatsvc")), *argv],
                cwd=cwd,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
    server = Server("", db, log_path, process, cwd)  # the URL once the banner names it
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chatsvc exited with {process.returncode}:\n{server.log()}")
        if not server.url and (listening := _LISTENING.search(log_path.read_bytes())):
            server.url = f"http://127.0.0.1:{int(listening.group(1))}"
        if server.url:
            try:
                if httpx.get(f"{server.url}/health", timeout=1, verify=tls()).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
        time.sleep(0.1)  # polling the process's log and port: there is no event to wait on
    server.stop()
    raise RuntimeError(f"chatsvc did not answer /health in time:\n{server.log()}")


def upstream_settings(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "LLM_MAX_RETRIES": "0",
        "MODEL_NAME": "fake-model",
        "MODELS": f"fake-model,{OTHER_MODEL}",
        "CHECKPOINT_SECONDS": "0.3",
    }
