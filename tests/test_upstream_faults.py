"""The upstream misbehaves: retries, the circuit breaker, stalls and the total deadline."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    AppServer,
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    start_app_server,
    tokens_of,
    upstream_settings,
    wait_until,
)
from tests.support.http import tls


def marker() -> str:
    return f"fault-{secrets.token_hex(4)}"


def _server(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpenAI,
    **settings: str,
) -> Iterator[tuple[AppServer, User]]:
    server = start_app_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp("faults"),
        **{**upstream_settings(fake), **settings},
    )
    try:
        yield server, register_and_login(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def impatient(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[tuple[AppServer, User]]:
    """Retries twice, gives up on a 1 s silence or after 8 s in all."""
    yield from _server(
        engine,
        make_database,
        tmp_path_factory,
        fake_llm,
        LLM_MAX_RETRIES="2",
        LLM_STREAM_IDLE_TIMEOUT="1",
        LLM_TOTAL_TIMEOUT="8",
        LLM_BREAKER_THRESHOLD="100",
    )


@pytest.fixture(scope="module")
def fragile(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[tuple[AppServer, User]]:
    """No retries; the circuit opens after 2 outages and cools down for 1 s."""
    yield from _server(
        engine,
        make_database,
        tmp_path_factory,
        fake_llm,
        LLM_MAX_RETRIES="0",
        LLM_BREAKER_THRESHOLD="2",
        LLM_BREAKER_COOLDOWN="1",
    )


def _reply(user: User, chat_id: str) -> dict:
    with user.client() as client:
        return client.get(f"/api/chats/{chat_id}").json()["messages"][-1]


def _attempts(fake: FakeOpenAI, mark: str) -> int:
    return sum(1 for r in fake.records if mark in r.last_user_message)


def test_failures_before_the_first_token_are_retried(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    _, user = impatient
    recovered, lost = marker(), marker()
    with Socket(user) as socket:
        ok = socket.start(f"{recovered} {directive(fail_times=2, status=503, tokens=3)}")
        ok_frames = socket.until_end(ok["task_id"])
        bad = socket.start(f"{lost} {directive(fail_times=3, status=429, tokens=3)}")
        bad_frames = socket.until_end(bad["task_id"])
    assert ok_frames[-1]["type"] == "done"
    assert ok_frames[-1]["message"]["content"] == "t0 t1 t2 "
    assert _attempts(fake_llm, recovered) == 3
    assert bad_frames[-1]["type"] == "error"
    assert bad_frames[-1]["code"] == "llm_unavailable"
    assert _attempts(fake_llm, lost) == 3
    failed = _reply(user, bad["chat_id"])
    assert failed["status"] == "failed"
    assert failed["content"] == ""
    with user.client() as client:
        history = client.get(f"/api/chats/{bad['chat_id']}").json()["messages"]
    assert history[0]["role"] == "user"  # the question stays stored


def test_an_upstream_that_never_answers_is_unavailable(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    """No response within the read timeout, three times (two retries): `llm_unavailable`."""
    _, user = impatient
    mark = marker()
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(header_delay=5, tokens=3)}")
        frames = socket.until_end(started["task_id"], timeout=40)
    assert frames[-1]["type"] == "error"
    assert frames[-1]["code"] == "llm_unavailable"
    assert frames[-1]["message"] == "the model server did not answer in time"
    assert _attempts(fake_llm, mark) == 3
    assert _reply(user, started["chat_id"])["status"] == "failed"


def test_a_refused_connection_is_unavailable(serve_app) -> None:  # type: ignore[no-untyped-def]
    """The SDK's aiohttp transport raises a refused connection as a connect timeout: it is
    still reported as what it is, and its cause logged once per request, not per retry."""
    from tests.support import refusing_port

    with refusing_port() as port:
        server: Server = serve_app(
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", LLM_MAX_RETRIES="1"
        )
        user = register_and_login(server)
        with Socket(user) as socket:
            started = socket.start("anyone there?")
            error = socket.until_end(started["task_id"])[-1]
    assert error["code"] == "llm_unavailable"
    assert error["message"] == "could not connect to the model server"
    log = server.log().splitlines()
    warnings = [line for line in log if " WARNING " in line and "chatsvc.providers" in line]
    assert any("Retrying request" in line for line in log)  # the SDK did retry, quietly
    assert len(warnings) == 1, warnings  # one request, two attempts: one line
    assert warnings[0].endswith(
        f"could not connect to the model server at 127.0.0.1:{port}: Connection refused"
    )
    assert "Traceback" not in server.log()
    with user.client() as client:
        history = client.get(f"/api/chats/{started['chat_id']}").json()["messages"]
    assert [(m["role"], m["status"], m["content"]) for m in history] == [
        ("user", "complete", "anyone there?"),
        ("assistant", "failed", ""),
    ]


def test_a_stalled_upstream_times_out_and_is_closed(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    _, user = impatient
    mark = marker()
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(tokens=10, stall_after=3)}")
        frames = socket.until_end(started["task_id"])
    error = frames[-1]
    assert error["type"] == "error"
    assert error["code"] == "timeout"
    assert error["task_id"] == started["task_id"]
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert streamed == "t0 t1 t2 "
    reply = _reply(user, started["chat_id"])
    assert reply["status"] == "failed"
    assert reply["content"] == streamed
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, timeout=5, what="the hang-up")


def test_the_total_deadline_ends_a_long_reply(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    _, user = impatient
    mark = marker()
    begun = time.monotonic()
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(tokens=400, rate=20)}")
        frames = socket.until_end(started["task_id"])
    assert time.monotonic() - begun < 15
    assert frames[-1]["type"] == "error"
    assert frames[-1]["code"] == "timeout"
    reply = _reply(user, started["chat_id"])
    assert reply["status"] == "failed"
    assert reply["content"]
    assert reply["content"] == "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, timeout=5, what="the hang-up")
    assert record.tokens_sent < 400


def test_the_circuit_opens_then_lets_one_trial_through(
    fragile: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    server, user = fragile

    def circuit() -> str:
        return httpx.get(f"{server.url}/health/ready", timeout=5, verify=tls()).json()["llm"]

    assert circuit() == "closed"
    with Socket(user) as socket:
        for _ in range(2):
            started = socket.start(f"{marker()} {directive(status=502)}")
            assert socket.until_end(started["task_id"])[-1]["code"] == "llm_unavailable"
        assert circuit() == "open"
        skipped = marker()
        started = socket.start(f"{skipped} {directive(tokens=2)}")
        error = socket.until_end(started["task_id"])[-1]
        assert error["code"] == "llm_unavailable"
        assert "circuit" in error["message"]
        assert _attempts(fake_llm, skipped) == 0  # failed at once, the upstream never asked
        # Once the cooldown (1 s) is over, the next request will be the trial, and readiness
        # says so before any request arrives (issue 12).
        wait_until(lambda: circuit() == "half-open", timeout=5, what="the half-open circuit")
        with httpx.Client(base_url=server.url, verify=tls()) as client:
            metrics = client.get("/metrics").text
        assert "chatsvc_llm_circuit_state 1.0" in metrics
        trial = marker()
        started = socket.start(f"{trial} {directive(tokens=2)}")
        assert socket.until_end(started["task_id"])[-1]["type"] == "done"
        assert _attempts(fake_llm, trial) == 1
    assert circuit() == "closed"
    with user.client() as client:
        chat = client.post("/api/chats", json={}).json()
    # A refusal that is not an outage (400) leaves the circuit closed.
    with Socket(user) as socket:
        for _ in range(3):
            started = socket.start(f"{marker()} {directive(status=400)}", chat_id=chat["id"])
            assert socket.until_end(started["task_id"])[-1]["code"] == "llm_error"
    assert circuit() == "closed"


def test_upstream_details_never_reach_clients(fragile: tuple[Server, User]) -> None:
    server, user = fragile
    with user.client() as client:
        chat = client.post("/api/chats", json={}).json()
        response = client.post(
            f"/api/chats/{chat['id']}/messages",
            json={"content": f"{marker()} {directive(status=400)}"},
        )
    assert response.status_code == 502
    assert "UPSTREAM-BODY" not in response.text
    assert "scripted failure" not in response.text
    assert "sk-test" not in server.log()


def test_tokens_read_with_an_error_event_are_kept_then_the_reply_fails(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    """The last tokens and the upstream's `error` event come in one read: the tokens are
    relayed and stored, then the reply fails with `llm_error`."""
    _, user = impatient
    mark = marker()
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(tokens=10, error_after=3, error_joined=True)}")
        frames = socket.until_end(started["task_id"])
    assert fake_llm.find(mark).tokens_sent == 3
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert streamed == "t0 t1 t2 "
    assert frames[-1]["type"] == "error"
    assert frames[-1]["code"] == "llm_error"
    reply = _reply(user, started["chat_id"])
    assert reply["status"] == "failed"
    assert reply["content"] == "t0 t1 t2 "


@pytest.mark.parametrize("ending", ["bare_done", "body_ends"])
def test_a_stream_without_a_finish_reason_is_no_finished_answer(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI, ending: str
) -> None:
    """llama-cpp-python ends an interrupted reply with a bare `[DONE]`; a body may also just
    end. Either way the text is kept and the reply ends `failed`, `llm_error`."""
    _, user = impatient
    mark = marker()
    script = {"tokens": 4, "bare_done": True}
    if ending == "body_ends":
        script = {"tokens": 10, "drop_after": 4}
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(**script)}")
        frames = socket.until_end(started["task_id"])
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert streamed == "t0 t1 t2 t3 "
    assert frames[-1]["type"] == "error", frames[-1]
    assert frames[-1]["code"] == "llm_error"
    reply = _reply(user, started["chat_id"])
    assert (reply["status"], reply["content"]) == ("failed", "t0 t1 t2 t3 ")
    if ending == "bare_done":
        assert frames[-1]["message"] == "the model server ended the reply early"


def test_an_event_that_is_not_json_ends_the_reply_and_keeps_its_text(
    impatient: tuple[Server, User], fake_llm: FakeOpenAI
) -> None:
    """A line the chunk decoder cannot read (a broken proxy between us and the model): the
    tokens before it are kept, nothing after it is taken, and the reply fails `llm_error`."""
    _, user = impatient
    mark = marker()
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(tokens=6, garbage_after=3)}")
        frames = socket.until_end(started["task_id"])
    streamed = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert streamed == "t0 t1 t2 "
    assert frames[-1]["type"] == "error", frames[-1]
    assert frames[-1]["code"] == "llm_error"
    assert "malformed" in frames[-1]["message"]
    reply = _reply(user, started["chat_id"])
    assert reply["status"] == "failed"
    assert reply["content"] == "t0 t1 t2 "
