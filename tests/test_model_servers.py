"""Each real model server's way of streaming, reproduced by the fake upstream (issue 13).

The fake's profiles (``tests/fake_openai.py``, ``PROFILES``) send what OpenAI,
vLLM, Ollama, llama-cpp-python and llama.cpp's ``llama-server`` send; the
generation behaviours that matter run against each, over the real WebSocket
(and the waiting REST route). docs/operations.md, "Model servers" says what differs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from tests.fake_openai import PROFILES, FakeOpenAI, Record, Script, directive
from tests.support import AppServer, Socket, User, register_and_login, tokens_of, upstream_settings

ALL = list(PROFILES)
#: Whether each server sends usage in the stream when asked (`stream_options.include_usage`).
SENDS_USAGE = {
    "openai": True,
    "vllm": True,
    "ollama": True,
    "llama-cpp-python": False,
    "llama-server": True,
}
#: How chatsvc ends a reply whose stream brought an error mid-way, per server.
MID_STREAM_ERROR = {
    "openai": "the model server reported an error while streaming",
    "vllm": "the model server reported an error while streaming",
    "ollama": "the model server reported an error while streaming",
    "llama-cpp-python": "the connection to the model server broke",  # no error event: it breaks
    "llama-server": "the model server reported an error while streaming",
}


def marker() -> str:
    return f"servers-{secrets.token_hex(4)}"


def history(user: User, chat_id: str) -> list[dict[str, Any]]:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def text_of(frames: list[dict[str, Any]], task_id: str) -> str:
    return "".join(t["token"] for t in tokens_of(frames, task_id))


def expected_usage(profile: str, record: Record, content: str) -> dict[str, Any]:
    """The usage chatsvc should store: the one the fake sent, or else its estimate, marked."""
    if not SENDS_USAGE[profile]:
        return record.estimated_usage(content)
    prompt = sum(len(str(m.get("content", ""))) for m in record.messages)
    return {"prompt_tokens": prompt, "completion_tokens": record.tokens_sent, "estimated": False}


def test_every_profile_is_covered() -> None:
    assert set(SENDS_USAGE) == set(MID_STREAM_ERROR) == set(PROFILES)


@pytest.mark.parametrize("profile", ALL)
def test_text_is_streamed_and_stored(alice: User, fake_llm: FakeOpenAI, profile: str) -> None:
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(profile=profile, tokens=6)}")
        frames = socket.until_end(started["task_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert text_of(frames, started["task_id"]) == Script(tokens=6).expected_text()
    assert done["finish_reason"] == "stop"
    record = fake_llm.find(mark)
    assert record.body["stream_options"] == {"include_usage": True}
    assert done["usage"] == expected_usage(profile, record, done["message"]["content"])
    stored = history(alice, started["chat_id"])[-1]
    assert stored == done["message"]
    assert (stored["status"], stored["content"]) == ("complete", Script(tokens=6).expected_text())
    assert stored["finish_reason"] == "stop"
    assert stored["usage"] == done["usage"]


@pytest.mark.parametrize("profile", ALL)
def test_the_waiting_rest_route(alice: User, fake_llm: FakeOpenAI, profile: str) -> None:
    mark = marker()
    with alice.client() as client:
        chat_id = client.post("/api/chats", json={}).json()["id"]
        script = directive(profile=profile, tokens=4, finish_reason="length")
        response = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": f"{mark} {script}"}
        )
    assert response.status_code == 200, response.text
    message = response.json()["message"]
    assert (message["status"], message["finish_reason"]) == ("complete", "length")
    assert message["content"] == Script(tokens=4).expected_text()
    assert message["usage"] == expected_usage(profile, fake_llm.find(mark), message["content"])


@pytest.mark.parametrize("profile", ["vllm", "ollama"])
def test_reasoning_is_relayed(alice: User, fake_llm: FakeOpenAI, profile: str) -> None:
    """vLLM sends `reasoning_content`, Ollama `reasoning`: both become `reasoning` events."""
    with Socket(alice) as socket:
        started = socket.start(f"{marker()} {directive(profile=profile, tokens=2, reasoning=3)}")
        frames = socket.until_end(started["task_id"])
    assert frames[-1]["type"] == "done", frames[-1]
    thoughts = [f for f in frames if f["type"] == "reasoning"]
    assert "".join(f["token"] for f in thoughts) == "r0 r1 r2 "
    assert frames[-1]["message"]["content"] == "t0 t1 "


@pytest.mark.parametrize("profile", ALL)
def test_an_error_mid_stream_fails_the_reply_and_keeps_its_text(
    alice: User, fake_llm: FakeOpenAI, profile: str
) -> None:
    """An error object in the body (or, on llama-cpp-python, a body that breaks off)."""
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(profile=profile, tokens=10, error_after=3)}")
        frames = socket.until_end(started["task_id"])
    error = frames[-1]
    assert (error["type"], error["code"]) == ("error", "llm_error"), error
    assert error["message"] == MID_STREAM_ERROR[profile]
    assert text_of(frames, started["task_id"]) == "t0 t1 t2 "
    assert fake_llm.find(mark).tokens_sent == 3
    stored = history(alice, started["chat_id"])[-1]
    assert (stored["status"], stored["content"]) == ("failed", "t0 t1 t2 ")


def test_an_interrupted_llama_cpp_python_reply_fails(alice: User, fake_llm: FakeOpenAI) -> None:
    """llama-cpp-python ends a reply that another request interrupts with a bare `[DONE]`."""
    script = directive(profile="llama-cpp-python", tokens=4, bare_done=True)
    with Socket(alice) as socket:
        started = socket.start(f"{marker()} {script}")
        frames = socket.until_end(started["task_id"])
    error = frames[-1]
    assert (error["type"], error["code"]) == ("error", "llm_error"), error
    assert error["message"] == "the model server ended the reply early"
    stored = history(alice, started["chat_id"])[-1]
    assert (stored["status"], stored["content"]) == ("failed", "t0 t1 t2 t3 ")


@pytest.mark.parametrize("profile", ALL)
def test_abort_closes_the_upstream_connection(
    alice: User, fake_llm: FakeOpenAI, profile: str
) -> None:
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(profile=profile, tokens=400, rate=40)}")
        before = socket.until(lambda f: f["type"] == "token" and f["seq"] >= 2)
        socket.send(action="abort", task_id=started["task_id"])
        frames = before + socket.until_end(started["task_id"])
    assert frames[-1]["type"] == "aborted", frames[-1]
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, timeout=5, what="the hang-up")
    assert not record.completed
    stored = history(alice, started["chat_id"])[-1]
    assert stored["status"] == "aborted"
    assert stored["content"] == text_of(frames, started["task_id"])


def _tree_nodes(user: User, chat_id: str) -> list[str]:
    with user.client() as client:
        tree = client.get(f"/api/chats/{chat_id}/tree").json()
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        found.append(node["value"])
        for child in node.get("children", []):
            walk(child)

    for child in tree["root"].get("children", []):
        walk(child)
    return found


def _ask_for_a_node(user: User, profile: str, mark: str) -> tuple[str, list[dict[str, Any]]]:
    with user.client() as client:
        chat_id = client.post("/api/chats", json={}).json()["id"]
    call = {"name": "tree_add_node", "arguments": {"parent_id": "root", "value": f"node {mark}"}}
    script = directive(profile=profile, rounds=[[call]], tokens=2)
    with Socket(user) as socket:
        started = socket.start(f"{mark} {script}", chat_id=chat_id)
        return chat_id, socket.until_end(started["task_id"])


@pytest.mark.parametrize("profile", [p for p in ALL if PROFILES[p].streams_tools])
def test_tree_tools_where_the_server_streams_tool_calls(
    alice: User, fake_llm: FakeOpenAI, profile: str
) -> None:
    """In pieces (OpenAI, vLLM, llama-server) or whole in one chunk (Ollama)."""
    mark = marker()
    chat_id, frames = _ask_for_a_node(alice, profile, mark)
    done = frames[-1]
    assert done["type"] == "done", done
    assert [f["type"] for f in frames].count("tree_update") == 1
    assert _tree_nodes(alice, chat_id) == [f"node {mark}"]
    first, second = fake_llm.records_for(mark)
    assert first.body["tools"]
    assert first.tool_calls_sent == 1
    assert second.tool_results[0]["content"]["ok"] is True
    assert done["message"]["content"] == "t0 t1 "
    assert [c["name"] for c in done["message"]["tool_calls"]] == ["tree_add_node"]


def test_llama_cpp_python_ignores_tools_in_a_streamed_request(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    """It does not stream tool calls: the tools offered are ignored and the model answers in
    text (most chat formats). The reply completes as text; the tree is not touched."""
    mark = marker()
    chat_id, frames = _ask_for_a_node(alice, "llama-cpp-python", mark)
    done = frames[-1]
    assert done["type"] == "done", done
    assert "tree_update" not in [f["type"] for f in frames]
    assert _tree_nodes(alice, chat_id) == []
    (only,) = fake_llm.records_for(mark)
    assert only.body["tools"]
    assert only.tool_calls_sent == 0
    assert done["finish_reason"] == "stop"
    assert "tool_calls" not in done["message"]


def test_a_server_that_refuses_stream_options(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    """A 400 naming `stream_options`: the request goes again without it, and every later one
    too (once per process, one log line); the server sends no usage unasked, so chatsvc
    stores its estimate, marked (issue 16)."""
    server = serve_app(**upstream_settings(fake_llm))
    user = register_and_login(server)
    first, later = marker(), marker()
    with Socket(user) as socket:
        started = socket.start(f"{first} {directive(reject_stream_options=True, tokens=3)}")
        frames = socket.until_end(started["task_id"])
        again = socket.start(f"{later} {directive(reject_stream_options=True, tokens=2)}")
        later_frames = socket.until_end(again["task_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert done["message"]["content"] == "t0 t1 t2 "
    refused, retried = fake_llm.records_for(first)
    assert done["usage"] == retried.estimated_usage("t0 t1 t2 ")  # the refused one cost nothing
    assert refused.body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in retried.body
    assert retried.messages == refused.messages
    assert later_frames[-1]["type"] == "done", later_frames[-1]
    (only,) = fake_llm.records_for(later)
    assert "stream_options" not in only.body
    lines = [line for line in server.log().splitlines() if "refuses stream_options" in line]
    assert len(lines) == 1, lines
    assert " INFO " in lines[0]
