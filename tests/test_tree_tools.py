"""The model edits the chat's workspace tree through tool calls (docs/protocol.md section 5).

Real servers stream from the fake upstream, which asks for the tool calls its
directive scripts (``rounds``, ``loop_tools``) and records what it was sent back.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from chatsvc import tree
from chatsvc.providers import Delta
from chatsvc.providers.chunks import StreamDecoder
from chatsvc.tree import ToolCall
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
)

TOOL_NAMES = {"tree_add_node", "tree_rename_node", "tree_move_node", "tree_remove_node"}


def marker() -> str:
    return f"tools-{secrets.token_hex(4)}"


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def add(parent_id: str, value: str, **extra: Any) -> dict[str, Any]:
    return call("tree_add_node", parent_id=parent_id, value=value, **extra)


def of_type(frames: list[dict], kind: str) -> list[dict]:
    return [f for f in frames if f["type"] == kind]


def get_tree(user: User, chat_id: str) -> dict[str, Any]:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}/tree")
    assert response.status_code == 200, response.text
    return response.json()


def new_chat(user: User) -> str:
    with user.client() as client:
        response = client.post("/api/chats", json={"title": "tools"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def follow(socket: Socket, chat_id: str, **options: Any) -> None:
    """Subscribe, and wait until the server has done it (frames are handled in order)."""
    socket.send(action="subscribe", chat_id=chat_id, **options)
    socket.send(action="ping")
    socket.until(lambda f: f["type"] == "pong")


def stored_reply(user: User, chat_id: str) -> dict[str, Any]:
    with user.client() as client:
        return client.get(f"/api/chats/{chat_id}").json()["messages"][-1]


@pytest.fixture(scope="module")
def tools_server(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[AppServer]:
    """Small limits (depth 3, 3 tool rounds), in development mode (`debug` events allowed)."""
    running = start_app_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp(f"tools-{engine}"),
        **upstream_settings(fake_llm),
        TREE_MAX_DEPTH="3",
        MAX_TOOL_ROUNDS="3",
        ENVIRONMENT="development",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def carol(tools_server: Server) -> User:
    return register_and_login(tools_server)


# --- the loop ---------------------------------------------------------------------------


def test_the_model_adds_three_nodes_in_two_rounds(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    script = directive(
        rounds=[[add("root", "A", id="a"), add("a", "B", id="b")], [add("root", "third")]],
        round_tokens=2,
        tokens=3,
    )
    chat_id = new_chat(alice)
    with Socket(alice) as socket, Socket(alice) as other:
        follow(other, chat_id)
        started = socket.start(f"{mark} {script}", chat_id=chat_id)
        task_id = started["task_id"]
        frames = socket.until_end(task_id)
        seen_by_other = other.until_end(task_id)

    done = frames[-1]
    assert done["type"] == "done", done
    assert done["finish_reason"] == "stop"
    updates = of_type(frames, "tree_update")
    assert [u["version"] for u in updates] == [1, 2, 3]
    assert all(u["source"] == "assistant" and u["task_id"] == task_id for u in updates)
    assert all(u["chat_id"] == chat_id for u in updates)
    assert of_type(seen_by_other, "tree_update") == updates
    assert seen_by_other[-1] == done

    # Text of every round goes to the one reply, seq without gaps.
    tokens = tokens_of(frames, task_id)
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    content = "".join(t["token"] for t in tokens)
    assert content == "r0.0 r0.1 r1.0 r1.1 t0 t1 t2 "
    assert done["message"]["content"] == content
    assert done["usage"]["completion_tokens"] == 2 + 2 + 3  # every round's, summed

    # The reply lists its calls; the stored message says the same.
    recorded = done["message"]["tool_calls"]
    assert [c["name"] for c in recorded] == ["tree_add_node"] * 3
    assert [json.loads(c["arguments"]) for c in recorded] == [
        {"parent_id": "root", "value": "A", "id": "a"},
        {"parent_id": "a", "value": "B", "id": "b"},
        {"parent_id": "root", "value": "third"},
    ]
    third = recorded[2]["result"]["id"]
    assert [c["result"] for c in recorded] == [
        {"ok": True, "version": 1, "id": "a"},
        {"ok": True, "version": 2, "id": "b"},
        {"ok": True, "version": 3, "id": third},
    ]
    assert stored_reply(alice, chat_id) == done["message"]

    assert get_tree(alice, chat_id) == {
        "chat_id": chat_id,
        "version": 3,
        "root": {
            "id": "root",
            "value": "",
            "children": [
                {"id": "a", "value": "A", "children": [{"id": "b", "value": "B", "children": []}]},
                {"id": third, "value": "third", "children": []},
            ],
        },
    }

    # What the model was offered and answered.
    first, second, last = fake_llm.records_for(mark)
    assert {t["function"]["name"] for t in first.body["tools"]} == TOOL_NAMES
    asked, *answers = second.since_user
    assert asked["role"] == "assistant"
    assert asked["content"] == "r0.0 r0.1 "
    assert [c["function"]["name"] for c in asked["tool_calls"]] == ["tree_add_node"] * 2
    assert [a["tool_call_id"] for a in answers] == [c["id"] for c in asked["tool_calls"]]
    assert [r["content"] for r in second.tool_results] == [c["result"] for c in recorded[:2]]
    assert [r["content"] for r in last.tool_results] == [c["result"] for c in recorded]
    assert [r.round for r in (first, second, last)] == [0, 1, 2]


def test_invalid_calls_are_tool_errors_for_the_model(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    invalid = [
        add("nowhere", "orphan"),
        {"name": "tree_rename_node", "arguments": '{"id": "root", "value": '},  # cut short
        call("tree_explode", id="root"),
        call("tree_remove_node", id="root"),
        call("tree_add_node", parent_id="root"),  # no value
    ]
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(tool_calls=invalid)}")
        frames = socket.until_end(started["task_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert done["finish_reason"] == "stop"
    assert not of_type(frames, "tree_update")
    assert not of_type(frames, "error")
    assert get_tree(alice, started["chat_id"])["version"] == 0

    results = [r["content"] for r in fake_llm.records_for(mark)[1].tool_results]
    assert len(results) == len(invalid)
    assert all(r["ok"] is False and set(r) == {"ok", "error"} for r in results), results
    errors = [r["error"] for r in results]
    assert "nowhere" in errors[0]
    assert "bad arguments" in errors[1]
    assert "unknown tool" in errors[2]
    assert "root cannot be removed" in errors[3]
    assert "value" in errors[4]
    assert [c["result"] for c in done["message"]["tool_calls"]] == results


def test_a_call_over_the_depth_limit_is_a_tool_error(carol: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    calls = [add("root", "1", id="d1"), add("d1", "2", id="d2"), add("d2", "3", id="d3")]
    with Socket(carol) as socket:
        started = socket.start(f"{mark} {directive(tool_calls=calls)}")
        frames = socket.until_end(started["task_id"])
    assert frames[-1]["type"] == "done", frames[-1]
    assert [u["version"] for u in of_type(frames, "tree_update")] == [1, 2]
    results = [r["content"] for r in fake_llm.records_for(mark)[1].tool_results]
    assert results[:2] == [
        {"ok": True, "version": 1, "id": "d1"},
        {"ok": True, "version": 2, "id": "d2"},
    ]
    assert results[2]["ok"] is False
    assert "deeper than 3" in results[2]["error"]
    stored = get_tree(carol, started["chat_id"])
    assert stored["version"] == 2
    assert stored["root"]["children"] == [
        {"id": "d1", "value": "1", "children": [{"id": "d2", "value": "2", "children": []}]}
    ]


def test_the_tool_round_cap_ends_the_reply_done(carol: User, fake_llm: FakeOpenAI) -> None:
    """MAX_TOOL_ROUNDS=3: three rounds applied, the fourth request's calls are not."""
    mark = marker()
    with Socket(carol) as socket:
        started = socket.start(f"{mark} {directive(loop_tools=True)}")
        frames = socket.until_end(started["task_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert done["finish_reason"] == "tool_rounds_exceeded"
    assert done["message"]["finish_reason"] == "tool_rounds_exceeded"
    assert [u["version"] for u in of_type(frames, "tree_update")] == [1, 2, 3]
    assert len(done["message"]["tool_calls"]) == 3
    time.sleep(0.3)  # nothing more goes upstream
    records = fake_llm.records_for(mark)
    assert [r.round for r in records] == [0, 1, 2, 3]
    assert [r["content"]["version"] for r in records[-1].tool_results] == [1, 2, 3]
    assert all(r.completed for r in records)
    assert get_tree(carol, started["chat_id"])["version"] == 3


def test_no_tools_are_offered_with_tree_tools_off(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    server = serve_app(**upstream_settings(fake_llm), TREE_TOOLS="false")
    user = register_and_login(server)
    mark = marker()
    with Socket(user) as socket:
        started = socket.start(f"{mark} {directive(tool_calls=[add('root', 'x')])}")
        frames = socket.until_end(started["task_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert done["finish_reason"] == "tool_calls"  # the model's own: nothing was applied
    assert "tool_calls" not in done["message"]
    assert not of_type(frames, "tree_update")
    [record] = fake_llm.records_for(mark)
    assert "tools" not in record.body
    assert get_tree(user, started["chat_id"])["version"] == 0


def test_the_model_sees_the_current_tree(alice: User, fake_llm: FakeOpenAI) -> None:
    chat_id = new_chat(alice)
    with alice.client() as client:
        patched = client.patch(
            f"/api/chats/{chat_id}/tree",
            json={
                "version": 0,
                "ops": [
                    {
                        "op": "add",
                        "path": "/root/children/-",
                        "value": {"id": "shopping", "value": "Shopping <list>", "children": []},
                    }
                ],
            },
        )
    assert patched.status_code == 200, patched.text
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(tokens=3)}", chat_id=chat_id)
        socket.until_end(started["task_id"])
    [record] = fake_llm.records_for(mark)
    system = record.messages[0]
    assert system["role"] == "system"
    assert [m["role"] for m in record.messages].count("system") == 1  # one, first
    prompt, tree = system["content"].split("\n\n", 1)
    assert prompt == "You are a helpful assistant."
    assert "version 1" in tree
    shown = tree.split("\n", 1)[1]
    assert json.loads(shown) == {
        "id": "root",
        "value": "",
        "children": [{"id": "shopping", "value": "Shopping <list>", "children": []}],
    }


# --- abort --------------------------------------------------------------------------------


def test_abort_between_rounds_keeps_the_changes(alice: User, fake_llm: FakeOpenAI) -> None:
    mark = marker()
    script = directive(
        rounds=[[add("root", "one", id="x1"), add("root", "two", id="x2")], [add("root", "3")]],
        round_tokens=1,
        round_delay=30,  # the second round hangs until the client hangs up
    )
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {script}")
        task_id = started["task_id"]
        before = socket.until(lambda f: f["type"] == "tree_update" and f["version"] == 2)
        fake_llm.wait_for(lambda: len(fake_llm.records_for(mark)) == 2, what="the second round")
        socket.send(action="abort", task_id=task_id)
        frames = before + socket.until_end(task_id)
    aborted = frames[-1]
    assert aborted["type"] == "aborted", aborted
    assert aborted["message"]["status"] == "aborted"
    assert aborted["message"]["content"] == "r0.0 "
    assert aborted["message"]["finish_reason"] is None
    assert [c["result"]["version"] for c in aborted["message"]["tool_calls"]] == [1, 2]
    assert stored_reply(alice, started["chat_id"]) == aborted["message"]
    second = fake_llm.records_for(mark)[1]
    fake_llm.wait_for(lambda: second.disconnected, timeout=5, what="the client hang up")
    time.sleep(0.3)
    assert len(fake_llm.records_for(mark)) == 2  # no third round
    stored = get_tree(alice, started["chat_id"])
    assert stored["version"] == 2
    assert [n["id"] for n in stored["root"]["children"]] == ["x1", "x2"]


def test_abort_during_a_round_stops_the_later_calls(alice: User, fake_llm: FakeOpenAI) -> None:
    """The call being applied finishes; none after it starts; nothing goes upstream again."""
    mark = marker()
    with Socket(alice) as socket:
        started = socket.start(f"{mark} {directive(loop_tools=True, calls_per_round=200)}")
        task_id = started["task_id"]
        before = socket.until(lambda f: f["type"] == "tree_update")
        socket.send(action="abort", task_id=task_id)
        frames = before + socket.until_end(task_id)
    aborted = frames[-1]
    assert aborted["type"] == "aborted", aborted
    versions = [u["version"] for u in of_type(frames, "tree_update")]
    applied = len(versions)
    assert versions == list(range(1, applied + 1))
    assert applied < 200
    recorded = aborted["message"]["tool_calls"]
    assert [c["result"]["version"] for c in recorded] == versions
    time.sleep(0.3)
    assert get_tree(alice, started["chat_id"])["version"] == applied
    assert len(fake_llm.records_for(mark)) == 1


# --- concurrent changes -------------------------------------------------------------------


@pytest.mark.postgres_only
def test_a_user_patch_racing_the_model_loses_nothing(alice: User, fake_llm: FakeOpenAI) -> None:
    """Both writers go through the database's version check: every change lands once."""
    mark = marker()
    model_nodes, user_nodes = 40, 20
    total = model_nodes + user_nodes
    rounds = [[add("root", f"m{i}") for i in range(r, r + 10)] for r in range(0, model_nodes, 10)]
    script = directive(rounds=rounds, round_delay=0.05)
    chat_id = new_chat(alice)

    def user_patches() -> None:
        with alice.client() as client:
            client.get("/api/me")  # connected before the model starts
            fake_llm.find(mark)
            for i in range(user_nodes):
                while True:
                    version = client.get(f"/api/chats/{chat_id}/tree").json()["version"]
                    node = {"id": f"u{i}", "value": f"u{i}", "children": []}
                    response = client.patch(
                        f"/api/chats/{chat_id}/tree",
                        json={
                            "version": version,
                            "ops": [{"op": "add", "path": "/root/children/-", "value": node}],
                        },
                    )
                    if response.status_code != 409:  # stale: read again and retry
                        assert response.status_code == 200, response.text
                        break

    user = threading.Thread(target=user_patches)
    with Socket(alice) as socket:
        user.start()
        started = socket.start(f"{mark} {script}", chat_id=chat_id)
        frames = socket.until_end(started["task_id"])
        user.join(60)
        assert not user.is_alive()
        updates = of_type(frames, "tree_update")
        if max(u["version"] for u in updates) < total:
            more = socket.until(lambda f: f["type"] == "tree_update" and f["version"] == total)
            updates += of_type(more, "tree_update")
    assert frames[-1]["type"] == "done", frames[-1]
    assert sorted(u["version"] for u in updates) == list(range(1, total + 1))
    assert sum(u["source"] == "assistant" for u in updates) == model_nodes
    assert sum(u["source"] == "user" for u in updates) == user_nodes
    assert all(c["result"]["ok"] for c in frames[-1]["message"]["tool_calls"])
    stored = get_tree(alice, chat_id)
    assert stored["version"] == total
    values = sorted(n["value"] for n in stored["root"]["children"])
    expected = [f"m{i}" for i in range(model_nodes)] + [f"u{i}" for i in range(user_nodes)]
    assert values == sorted(expected)


# --- the echo provider --------------------------------------------------------------------


def test_echo_provider_tree_commands(serve_app: Callable[..., AppServer]) -> None:
    """`uv run chatsvc` with no upstream: `/tree ...` messages drive the tools."""
    server = serve_app(ECHO_TOKEN_DELAY="0.001")
    user = register_and_login(server)
    with Socket(user) as socket:

        def say(content: str, chat_id: str | None = None) -> list[dict]:
            fields = {"chat_id": chat_id} if chat_id else {}
            started = socket.start(content, **fields)
            frames = socket.until_end(started["task_id"])
            assert frames[-1]["type"] == "done", frames[-1]
            return frames

        frames = say("/tree add root hello")
        done = frames[-1]
        chat_id = done["chat_id"]
        [update] = of_type(frames, "tree_update")
        node_id = done["message"]["tool_calls"][0]["result"]["id"]
        assert update["version"] == 1
        assert done["message"]["content"] == f"Done: added node {node_id} (version 1)."
        assert done["finish_reason"] == "stop"

        reply = say(f"/tree rename {node_id} hello  world", chat_id)[-1]["message"]["content"]
        assert reply == f"Done: renamed node {node_id} (version 2)."
        second = say("/tree add root second", chat_id)[-1]["message"]["tool_calls"][0]
        other_id = second["result"]["id"]
        reply = say(f"/tree move {other_id} {node_id} 0", chat_id)[-1]["message"]["content"]
        assert reply == f"Done: moved node {other_id} (version 4)."

        frames = say("/tree remove root", chat_id)
        assert not of_type(frames, "tree_update")
        assert frames[-1]["message"]["content"] == (
            "Not done: the node could not be removed: the root cannot be removed."
        )
        usage = say("/tree frobnicate", chat_id)[-1]["message"]
        assert usage["content"].startswith("usage: /tree add <parent_id> <text>")
        assert "tool_calls" not in usage
        assert say("hello there", chat_id)[-1]["message"]["content"] == "Echo: hello there"

    assert get_tree(user, chat_id)["root"]["children"] == [
        {
            "id": node_id,
            "value": "hello  world",
            "children": [{"id": other_id, "value": "second", "children": []}],
        }
    ]


# --- the debug event ----------------------------------------------------------------------


def test_debug_event_before_the_terminal_event(carol: User, fake_llm: FakeOpenAI) -> None:
    """Published once per reply; here to a socket that asked (a development server)."""
    chat_id = new_chat(carol)
    script = directive(tool_calls=[add("root", "dbg")], tokens=20, rate=50)
    with Socket(carol) as socket, Socket(carol) as debugging:
        follow(debugging, chat_id, debug=True)
        started = socket.start(f"{marker()} {script}", chat_id=chat_id)
        frames = debugging.until_end(started["task_id"])
        socket.until_end(started["task_id"])

        slow = socket.start(f"{marker()} {directive(tokens=400, rate=40)}", chat_id=chat_id)
        socket.until(lambda f: f["type"] == "token")
        socket.send(action="abort", task_id=slow["task_id"])
        aborted = debugging.until_end(slow["task_id"])

    debug, done = frames[-2:]
    assert done["type"] == "done"
    assert debug["type"] == "debug", frames[-3:]
    assert len(of_type(frames, "debug")) == 1
    assert debug["task_id"] == started["task_id"]
    assert debug["chat_id"] == chat_id
    data = debug["data"]
    assert data["status"] == "complete"
    assert data["tokens"] == len(tokens_of(frames, started["task_id"]))  # events, not words
    assert 0 < data["tokens"] <= 20
    assert data["rounds"] == 2
    assert data["tool_rounds"] == 1
    assert data["tool_calls"] == 1
    assert data["upstream_first_token_ms"] >= 0
    assert data["duration_ms"] >= data["upstream_first_token_ms"]
    assert data["cancel_latency_ms"] is None

    debug = aborted[-2]
    assert aborted[-1]["type"] == "aborted"
    assert debug["type"] == "debug"
    assert debug["data"]["status"] == "aborted"
    assert 0 <= debug["data"]["cancel_latency_ms"] < 5000


# --- in-process: schemas and the stream's tool call fragments ------------------------------


def test_tool_schemas_match_the_argument_structs() -> None:
    assert {t["function"]["name"] for t in tree.TOOLS} == TOOL_NAMES
    for tool in tree.TOOLS:
        function = tool["function"]
        fields = msgspec.structs.fields(tree._ARGUMENTS[function["name"]])
        parameters = function["parameters"]
        assert set(parameters["properties"]) == {f.encode_name for f in fields}
        assert set(parameters["required"]) == {f.encode_name for f in fields if f.required}
        assert function["description"]


def _sse(*chunks: dict[str, Any]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def _deltas(data: bytes, cut: int) -> list[Delta]:
    """The decoder's deltas for ``data`` read ``cut`` bytes at a time, up to ``[DONE]``."""
    decoder = StreamDecoder()
    deltas: list[Delta] = []
    for start in range(0, len(data), cut):
        delta, done, error = decoder.feed(data[start : start + cut])
        assert error is None
        deltas += [delta] if delta is not None else []
        if done:
            break
    decoder.end()
    return deltas


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize("cut", [1, 7, 10_000])
def test_streamed_tool_calls_come_out_whole(cut: int) -> None:
    data = _sse(
        _choice({"content": "ok "}),
        _choice(
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "function": {"name": "tree_add_node", "arguments": ""}}
                ]
            }
        ),
        _choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"parent_id": '}}]}),
        _choice(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "c2",
                        "function": {"name": "tree_remove", "arguments": '{"id"'},
                    }
                ]
            }
        ),
        _choice({"tool_calls": [{"index": 0, "function": {"arguments": '"root", "value": "x"}'}}]}),
        _choice(
            {"tool_calls": [{"index": 1, "function": {"name": "_node", "arguments": ': "n1"}'}}]}
        ),
        _choice({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    )
    deltas = _deltas(data, cut)
    calls = [c for d in deltas for c in d.tool_calls]
    assert calls == [
        ToolCall(id="c1", name="tree_add_node", arguments='{"parent_id": "root", "value": "x"}'),
        ToolCall(id="c2", name="tree_remove_node", arguments='{"id": "n1"}'),
    ]
    [ending] = [d for d in deltas if d.tool_calls]
    assert ending.finish_reason == "tool_calls"
    assert "".join(d.text for d in deltas) == "ok "


def test_unnumbered_tool_calls_and_whole_arguments() -> None:
    """Servers that number no calls, repeat the name, or send the arguments as one object."""
    data = _sse(
        _choice({"tool_calls": [{"id": "a", "function": {"name": "tree_remove_node"}}]}),
        _choice({"tool_calls": [{"function": {"name": "tree_remove_node", "arguments": '{"id"'}}]}),
        _choice({"tool_calls": [{"function": {"arguments": ': "x"}'}}]}),
        _choice(
            {
                "tool_calls": [
                    {"id": "b", "function": {"name": "tree_remove_node", "arguments": {"id": "y"}}}
                ]
            }
        ),
        _choice({}, "stop"),
    )
    calls = [c for d in _deltas(data, 10_000) for c in d.tool_calls]
    assert calls == [
        ToolCall(id="a", name="tree_remove_node", arguments='{"id": "x"}'),
        ToolCall(id="b", name="tree_remove_node", arguments='{"id":"y"}'),
    ]
