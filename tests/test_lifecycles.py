"""Lifecycles: what the app's services undo when entering them fails, and the SSE end at a stop.

Entering ``AccessWatch`` or ``Generations`` starts background tasks, then
waits for the event bus. When the bus refuses connections, the task reading
it fails while the service is still entering: the service must exit its task
group (cancelling the other tasks), undo what it took (the instance lease),
and let the bus's error out, not a broken cancel scope.

``Generations`` is entered in a separate process (a real database, a real
refused port, the real objects), since the database engine is chosen per
process; the whole app is started as a server.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    JWT_SECRET,
    Database,
    clean_environment,
    refusing_port,
    register_and_login,
    run_chatsvc,
    start_server,
    upstream_settings,
)
from tests.support.http import tls

#: Enters a ``Generations`` on the bus of ``EVENT_BUS_URL``, the body raising ``Boom`` if it
#: gets in; prints what came out, then that and the background tasks still running after it.
ENTER_GENERATIONS = """
import json
import anyio
from chatsvc.bus import EventBus
from chatsvc.database import connection_pool, engine_from_settings, use_engine
from chatsvc.events import ChatEvents
from chatsvc.generation import Generations
from chatsvc.providers import create_provider
from chatsvc.settings import load_settings

class Boom(Exception):
    pass

def leaves(exc):
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [type(exc).__name__]

async def main():
    settings = load_settings()
    bus = EventBus.from_url(settings.event_bus_url)
    events = ChatEvents(bus)
    generations = Generations(settings, create_provider(settings), events, bus)
    report = {"entered": False, "raised": []}
    engine = engine_from_settings(settings)
    with use_engine(engine):
        await run(generations, bus, events, engine, report)

async def run(generations, bus, events, engine, report):
    async with connection_pool(engine), bus, events:
        try:
            async with generations:
                report["entered"] = True
                raise Boom()
        except BaseException as exc:
            report["raised"] = leaves(exc)
        print(json.dumps(report), flush=True)
        await anyio.sleep(0.2)  # a task left running would still be there
        names = {task.name for task in anyio.get_running_tasks()}
        report["left"] = sorted(names & {"checkpoints", "lease", "bus requests"})
        print(json.dumps(report), flush=True)

anyio.run(main)
"""


@contextlib.contextmanager
def _refused_url() -> Iterator[str]:
    """A Redis URL on a loopback port that refuses connections while the block runs."""
    with refusing_port() as port:
        yield f"redis://127.0.0.1:{port}"


def _enter_generations(db: Database, cwd: Path, event_bus_url: str) -> dict:
    env = clean_environment(
        DATABASE_URL=db.url, ENVIRONMENT="test", JWT_SECRET=JWT_SECRET, EVENT_BUS_URL=event_bus_url
    )
    migrated = run_chatsvc("migrate", cwd=cwd, env=env)
    assert migrated.returncode == 0, migrated.stderr
    done = subprocess.run(
        [sys.executable, "-c", ENTER_GENERATIONS],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])  # without "left" when the process broke down after entering


def test_generations_that_cannot_reach_the_bus_undo_what_they_entered(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    db = make_database(engine)
    with _refused_url() as url:
        report = _enter_generations(db, tmp_path, url)
    assert not report["entered"]
    assert report["raised"] == ["ConnectionError"]  # the bus's error, and nothing else
    assert report.get("left") == []  # the checkpoint and lease loops were cancelled
    assert db.query("SELECT id FROM instance") == []  # the lease taken was dropped


def test_the_body_error_of_generations_comes_out_and_stops_its_tasks(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    db = make_database(engine)
    report = _enter_generations(db, tmp_path, "")  # no bus: one instance
    assert report["entered"]
    assert report["raised"] == ["Boom"]
    assert report.get("left") == []
    assert db.query("SELECT id FROM instance") == []


def test_a_server_whose_bus_refuses_stops_at_start_naming_the_bus_error(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    with _refused_url() as url, pytest.raises(RuntimeError, match="exited with") as failed:
        start_server(make_database(engine), tmp_path, EVENT_BUS_URL=url)
    log = str(failed.value)
    assert "Application startup failed" in log
    assert "Connection refused" in log  # the cause is in the log ...
    assert "cancel scope" not in log  # ... not a task group left open by a failed start


def test_an_sse_stream_ends_cleanly_when_a_stop_interrupts_its_reply(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path: Path,
    fake_llm: FakeOpenAI,
) -> None:
    """The interrupted reply has no terminal event: the stream still ends, as a whole response."""
    server = start_server(
        make_database(engine, migrated=True),
        tmp_path,
        **upstream_settings(fake_llm),
        SHUTDOWN_TIMEOUT="10",
    )
    outcome: dict[str, object] = {"kinds": []}
    streaming = threading.Event()

    def read_stream() -> None:
        auth = {"Authorization": f"Bearer {user.token}"}
        kinds: list[str] = []
        outcome["kinds"] = kinds
        try:
            with (
                httpx.Client(base_url=server.url, timeout=30, verify=tls()) as client,
                client.stream(
                    "POST",
                    f"/api/chats/{chat_id}/messages",
                    json={"content": f"long {directive(tokens=2000, rate=20)}"},
                    headers={**auth, "Accept": "text/event-stream"},
                ) as response,
            ):
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kinds.append(line.split(":", 1)[1].strip())
                        if kinds[-1] == "token":
                            streaming.set()
            outcome["ended"] = "whole"
        except httpx.HTTPError as exc:
            outcome["ended"] = type(exc).__name__

    try:
        user = register_and_login(server)
        with user.client() as client:
            chat_id = client.post("/api/chats", json={}).json()["id"]
        reader = threading.Thread(target=read_stream)
        reader.start()
        assert streaming.wait(20)
        server.process.send_signal(signal.SIGTERM)
        reader.join(20)
        server.process.wait(timeout=20)
    finally:
        server.stop()
    assert not reader.is_alive(), "the SSE stream did not end"
    assert outcome.get("ended") == "whole", outcome
    kinds = outcome["kinds"]
    assert isinstance(kinds, list)
    assert kinds[:2] == ["message", "started"]
    assert set(kinds[2:]) == {"token"}  # no terminal event: the server was stopping
    assert "Application shutdown complete" in server.log()
    assert server.process.returncode in (0, -signal.SIGTERM), server.log()
