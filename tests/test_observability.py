"""Audit log lines per generation event, Prometheus metrics, JSON logs in production."""

from __future__ import annotations

import json
import re
import secrets

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_openai import FakeOpenAI, directive
from tests.support import Server, Socket, User, register_and_login
from tests.support.http import tls


def metrics(server: Server) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{server.url}/metrics", timeout=10, verify=tls())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def audit_lines(server: Server, task_id: str) -> list[str]:
    return [
        line for line in server.log().splitlines() if "chatsvc.audit" in line and task_id in line
    ]


def test_metrics_count_generations_tokens_and_latencies(alice: User) -> None:
    server = alice.server
    before = metrics(server)
    with Socket(alice) as socket:
        done = socket.start(f"m1 {directive(tokens=6)}")
        socket.until_end(done["task_id"])
        slow = socket.start(f"m2 {directive(tokens=300, rate=50)}")
        socket.until(lambda f: f["type"] == "token")
        socket.send(action="abort", task_id=slow["task_id"])
        socket.until_end(slow["task_id"])
        failed = socket.start(f"m3 {directive(status=503)}")
        socket.until_end(failed["task_id"])
        during = metrics(server)
    after = metrics(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("chatsvc_generations_started_total") == 3
    assert delta("chatsvc_generations_finished_total", status="complete") == 1
    assert delta("chatsvc_generations_finished_total", status="aborted") == 1
    assert delta("chatsvc_generations_finished_total", status="failed") == 1
    assert delta("chatsvc_upstream_errors_total", code="llm_unavailable") == 1
    assert delta("chatsvc_token_events_total") >= 2  # a burst read is one event
    assert delta("chatsvc_completion_tokens_total") == 6  # only the finished reply reports usage
    assert delta("chatsvc_time_to_first_token_seconds_count") == 2
    assert delta("chatsvc_abort_latency_seconds_count") == 1
    assert value(after, "chatsvc_generations_active") == 0
    assert value(during, "chatsvc_websockets_open") >= 1
    assert value(after, "chatsvc_llm_circuit_state") == 0
    assert any(name.startswith("litestar_requests") for name, _ in after)  # HTTP metrics


def test_audit_log_says_what_happened(alice: User, fake_llm: FakeOpenAI) -> None:
    server = alice.server
    with Socket(alice) as socket:
        done = socket.start(f"a1 {directive(tokens=4)}")
        socket.until_end(done["task_id"])
        by_socket = socket.start(f"a2 {directive(tokens=300, rate=50)}")
        socket.until(lambda f: f["type"] == "token")
        socket.send(action="abort", task_id=by_socket["task_id"])
        socket.until_end(by_socket["task_id"])
        by_rest = socket.start(f"a3 {directive(tokens=300, rate=50)}")
        socket.until(lambda f: f["type"] == "token")
        with alice.client() as client:
            assert client.post(f"/api/chats/{by_rest['chat_id']}/abort").status_code == 200
        socket.until_end(by_rest["task_id"])
        failed = socket.start(f"a4 {directive(tokens=5, drop_after=2)}")
        socket.until_end(failed["task_id"])

    started, complete = audit_lines(server, done["task_id"])
    assert "generation started" in started
    assert f"user_id={alice.id}" in started
    assert f"chat_id={done['chat_id']}" in started
    assert "generation complete" in complete
    assert re.search(r"duration_ms=\d+", complete)
    assert "completion_tokens=4" in complete
    assert "asctime=" not in complete
    assert "finish_reason=stop" in complete
    assert "aborted_by=socket" in audit_lines(server, by_socket["task_id"])[-1]
    assert "aborted_by=rest" in audit_lines(server, by_rest["task_id"])[-1]
    failure = audit_lines(server, failed["task_id"])[-1]
    assert "generation failed" in failure
    assert "error_code=llm_error" in failure
    assert alice.token not in server.log()
    # One line per reply's start is the audit's: the HTTP client's own is quiet at INFO.
    assert "/chat/completions" not in server.log()


def test_production_logs_are_json_lines(serve_app, fake_llm: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    from tests.support import upstream_settings

    server: Server = serve_app(
        **upstream_settings(fake_llm),
        ENVIRONMENT="production",
        JWT_SECRET=secrets.token_urlsafe(48),
    )
    user = register_and_login(server)
    with Socket(user) as socket:
        started = socket.start(f"json {directive(tokens=3)}")
        socket.until_end(started["task_id"])
    entries = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert entries, server.log()
    ended = [e for e in entries if e.get("task_id") == started["task_id"] and e.get("event")]
    assert [e["event"] for e in ended] == ["started", "complete"]
    assert ended[1]["logger"] == "chatsvc.audit"
    assert ended[1]["user_id"] == user.id
    assert ended[1]["completion_tokens"] == 3
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert user.token not in server.log()
