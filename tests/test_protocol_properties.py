"""Property tests of the WebSocket protocol (docs/protocol.md section 4.2), with hypothesis.

Two pure properties of the msgspec wire types (no server): every valid client
frame survives ``encode -> decode_client_frame``, also as a client in another
language would send it (fields in any order, defaults left out), and every server
frame survives ``encode_frame -> decode as ServerFrame``.

One property of the real server (both engines): whenever an ``abort`` lands,
before, during or after the stream, the generation ends in exactly one terminal
event, its ``seq`` has no gaps, and the final message, as sent and as stored, is
exactly the text that was streamed.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC
from typing import Any, get_args

import msgspec
from hypothesis import event, given, settings
from hypothesis import strategies as st

from chatsvc.wire import (
    Abort,
    Aborted,
    Chat,
    ChatCreated,
    ClientFrame,
    Done,
    ErrorEvent,
    EventType,
    Limits,
    Message,
    MessageEvent,
    Ping,
    Pong,
    Ready,
    ReasoningEvent,
    SendMessage,
    ServerFrame,
    Started,
    Subscribe,
    TokenEvent,
    Unsubscribe,
    Usage,
    decode_client_frame,
    encode_frame,
)
from tests.fake_openai import Script, directive
from tests.support import Socket, User

#: Pure properties are cheap: many examples. The live one costs a generation per example.
PURE = settings(max_examples=200, deadline=None, database=None)
LIVE = settings(max_examples=15, deadline=None, database=None)

# --- strategies for the wire types ------------------------------------------------------

uuids = st.uuids()
optional_uuids = st.none() | uuids
# Content as a client may send it: 1..200 characters of UTF-8 (no lone surrogates), no NUL.
contents = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=200
)
request_ids = st.none() | st.text(max_size=200)
texts = st.text(max_size=50)
optional_texts = st.none() | texts
utc_datetimes = st.datetimes(timezones=st.just(UTC))
counts = st.integers(min_value=0, max_value=2**53)  # exact in every JSON client

send_messages = st.builds(
    SendMessage, content=contents, chat_id=optional_uuids, request_id=request_ids
)
aborts = st.one_of(
    st.builds(Abort, task_id=uuids),
    st.builds(Abort, chat_id=uuids),
    st.builds(Abort, task_id=uuids, chat_id=uuids),
)
subscribes = st.builds(Subscribe, chat_id=uuids, debug=st.booleans())
unsubscribes = st.builds(Unsubscribe, chat_id=uuids)
client_frames = st.one_of(send_messages, aborts, subscribes, unsubscribes, st.just(Ping()))

usages = st.none() | st.builds(
    Usage, prompt_tokens=st.none() | counts, completion_tokens=st.none() | counts
)
messages = st.builds(
    Message,
    id=uuids,
    chat_id=uuids,
    role=st.sampled_from(["user", "assistant"]),
    content=st.text(max_size=200),
    status=st.sampled_from(["complete", "streaming", "aborted", "failed", "interrupted"]),
    is_ai=st.booleans(),
    model=optional_texts,
    usage=usages,
    finish_reason=optional_texts,
    created_at=utc_datetimes,
    completed_at=st.none() | utc_datetimes,
)
chats = st.builds(
    Chat,
    id=uuids,
    title=texts,
    system_prompt=texts,
    model=optional_texts,
    temperature=st.none() | st.floats(min_value=0, max_value=2),
    top_p=st.none() | st.floats(min_value=0, max_value=1, exclude_min=True),
    max_tokens=st.none() | st.integers(min_value=1, max_value=1_000_000),
    created_at=utc_datetimes,
    updated_at=utc_datetimes,
)
server_frames = st.one_of(
    st.builds(
        Ready,
        session_id=texts,
        user_id=st.integers(min_value=1, max_value=2**31 - 1),
        limits=st.builds(
            Limits,
            max_message_chars=counts,
            max_frame_bytes=counts,
            max_concurrent_generations=counts,
        ),
        protocol=st.just(1),
    ),
    st.builds(ChatCreated, chat=chats, request_id=request_ids),
    st.builds(MessageEvent, message=messages, request_id=request_ids),
    st.builds(Started, task_id=uuids, chat_id=uuids, message_id=uuids, request_id=request_ids),
    st.builds(TokenEvent, task_id=uuids, chat_id=uuids, seq=counts, token=st.text()),
    st.builds(ReasoningEvent, task_id=uuids, chat_id=uuids, seq=counts, token=st.text()),
    st.builds(
        Done,
        task_id=uuids,
        chat_id=uuids,
        message=messages,
        usage=usages,
        finish_reason=optional_texts,
    ),
    st.builds(Aborted, task_id=uuids, chat_id=uuids, message=messages),
    st.builds(
        ErrorEvent,
        code=st.sampled_from(["invalid_message", "not_running", "busy", "llm_error", "internal"]),
        message=texts,
        task_id=optional_uuids,
        chat_id=optional_uuids,
        request_id=request_ids,
    ),
    st.just(Pong()),
)

decode_server_frame = msgspec.json.Decoder(ServerFrame).decode


# --- pure properties ------------------------------------------------------------------------


@PURE
@given(client_frames)
def test_every_valid_client_frame_round_trips(frame: ClientFrame) -> None:
    assert decode_client_frame(msgspec.json.encode(frame)) == frame


@PURE
@given(client_frames, st.randoms(use_true_random=False))
def test_client_frames_decode_in_any_field_order_with_defaults_left_out(
    frame: ClientFrame, random: Any
) -> None:
    """What another client library sends: its own key order, no ``null`` for absent fields."""
    fields = json.loads(msgspec.json.encode(frame))
    defaults = {"chat_id": None, "task_id": None, "request_id": None, "debug": False}
    sent = {k: v for k, v in fields.items() if k not in defaults or defaults[k] != v}
    keys = list(sent)
    random.shuffle(keys)
    text = json.dumps({k: sent[k] for k in keys}, ensure_ascii=random.random() < 0.5)
    assert decode_client_frame(text) == frame


@PURE
@given(server_frames)
def test_every_server_frame_round_trips(frame: ServerFrame) -> None:
    encoded = encode_frame(frame)
    assert decode_server_frame(encoded) == frame
    assert json.loads(encoded)["type"] == type(frame).__struct_config__.tag


def test_event_type_is_the_tag_of_every_server_frame() -> None:
    tags = {frame.__struct_config__.tag for frame in get_args(ServerFrame)}
    assert tags == set(get_args(EventType))


# --- the live property: abort at any moment -------------------------------------------------

RATE = 200  # tokens a second from the fake upstream
#: The codes of an ``error`` that ends a generation (docs/protocol.md section 4.1); others
#: answer a request.
TERMINAL_ERROR_CODES = {"llm_unavailable", "llm_error", "too_large", "timeout", "internal"}
STATUS_OF = {"done": "complete", "aborted": "aborted", "error": "failed"}


def _is_terminal(frame: dict[str, Any], task_id: str) -> bool:
    if frame.get("task_id") != task_id:
        return False
    if frame["type"] == "error":
        return frame["code"] in TERMINAL_ERROR_CODES
    return frame["type"] in ("done", "aborted")


#: A reply length, and after how many of its tokens the abort goes out: 0 at once, ``tokens``
#: right at the end, ``tokens + 1`` after the terminal event.
replies = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n + 1))
)


@LIVE
@given(
    reply=replies,
    jitter=st.just(0.0) | st.floats(min_value=0, max_value=0.02),  # and then this many seconds
    by=st.sampled_from(["task_id", "chat_id"]),
)
def test_abort_at_any_moment_ends_the_generation_exactly_once(
    alice: User, reply: tuple[int, int], jitter: float, by: str
) -> None:
    tokens, abort_after = reply
    with Socket(alice) as socket:
        started = socket.start(f"prop-{secrets.token_hex(4)} {directive(tokens=tokens, rate=RATE)}")
        task_id, chat_id = started["task_id"], started["chat_id"]
        frames: list[dict[str, Any]] = []
        if abort_after:  # the fake's i-th token is "t<i> "; one event may carry several
            seen = f"t{abort_after - 1} "
            streamed: list[str] = []

            def far_enough(frame: dict[str, Any]) -> bool:
                if frame["type"] == "token" and frame["task_id"] == task_id:
                    streamed.append(frame["token"])
                return _is_terminal(frame, task_id) or seen in "".join(streamed)

            frames = socket.until(far_enough)
        time.sleep(jitter)
        socket.send(action="abort", **{by: started[by]})
        if not any(_is_terminal(f, task_id) for f in frames):
            frames += socket.until(lambda f: _is_terminal(f, task_id), timeout=30)
        # Read on past the end (a ping's round trip) in case a second terminal event follows.
        socket.send(action="ping")
        frames += socket.until(lambda f: f["type"] == "pong")

    terminals = [f for f in frames if _is_terminal(f, task_id)]
    assert len(terminals) == 1, terminals
    end = terminals[0]
    assert end["type"] in ("done", "aborted"), end  # the fake upstream never fails here
    event(f"ended {end['type']}" + (" before any token" if not end["message"]["content"] else ""))

    deltas = [
        (position, f)
        for position, f in enumerate(frames)
        if f["type"] in ("token", "reasoning") and f["task_id"] == task_id
    ]
    assert [f["seq"] for _, f in deltas] == list(range(len(deltas)))
    assert all(position < frames.index(end) for position, _ in deltas)  # none after the end
    streamed = "".join(f["token"] for _, f in deltas if f["type"] == "token")
    expected = Script(tokens=tokens).expected_text()

    final = end["message"]
    assert final["id"] == started["message_id"]
    assert final["content"] == streamed
    assert final["status"] == STATUS_OF[end["type"]]
    if end["type"] == "done":
        assert streamed == expected
    else:
        assert expected.startswith(streamed)

    # The abort's own answer: none when it aborted; at most a `not_running` when it came late.
    others = [f for f in frames if f["type"] == "error" and f is not end]
    assert all(f["code"] == "not_running" for f in others), others
    assert len(others) <= (1 if end["type"] == "done" else 0), others

    with alice.client() as client:
        stored = client.get(f"/api/chats/{chat_id}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["messages"][-1] == final
