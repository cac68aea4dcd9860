"""Hostile input: a table of malformed WebSocket frames and REST requests.

Every case names the exact answer the contract gives it (docs/protocol.md section 2 and
docs/protocol.md section 2): a WebSocket ``error`` frame with its ``code``, or a
REST status with a JSON body whose ``code`` is set. No case may get a 5xx, leak
a stack trace, close the socket, or change a stored row. Text that merely looks
like HTML or SQL is valid and is stored and returned verbatim.

The WebSocket cases share one socket per engine (reconnected only when a case
broke it), so a case that closes the socket fails alone and names its input.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.fake_openai import Script, directive
from tests.support import Server, Socket, User, insert_message, register_and_login, tokens_of

MAX_CHARS = 16_000
MAX_FRAME_BYTES = 65_536
DEEP = 10_000
UNKNOWN_ID = "3f2b8c1e-9d4a-4e6b-8a7c-5d1e2f3a4b5c"
NIL_ID = "00000000-0000-0000-0000-000000000000"
#: Replaced at run time: the attacker's own chat, the victim's chat, the victim's user id.
OWN, OTHER, VICTIM = "$OWN", "$OTHER", "$VICTIM"
INVALID = "invalid_message"
#: What must never reach a client (docs/protocol.md section 2: no stack traces, SQL or
#: driver messages).
LEAKS = (
    "Traceback",
    'File "',
    "asyncpg",
    "sqlite3",
    "psycopg",
    "piccolo",
    "RecursionError",
    "UnicodeDecodeError",
    "SELECT ",
    "INSERT INTO",
    "DELETE FROM",
    "/chatsvc/",
)


def frame(**fields: Any) -> str:
    """A JSON text frame, non-ASCII kept as UTF-8 (so sizes are what they look like)."""
    return json.dumps(fields, ensure_ascii=False)


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def assert_no_leak(text: str, where: str) -> None:
    for marker in LEAKS:
        assert marker not in text, f"{where}: internal detail {marker!r} leaked: {text[:500]}"


# --- the attacker, the victim, and what is stored -------------------------------------------


@dataclass
class Hostile:
    """One attacker and one victim on a server, and the attacker's reusable socket."""

    server: Server
    user: User
    victim: User
    own_chat: str
    other_chat: str
    _socket: Socket | None = field(default=None, repr=False)

    def resolve(self, text: str) -> str:
        return (
            text.replace(OWN, self.own_chat)
            .replace(OTHER, self.other_chat)
            .replace(VICTIM, str(self.victim.id))
        )

    def socket(self) -> Socket:
        if self._socket is None:
            self._socket = Socket(self.user)
        return self._socket

    def client(self) -> httpx.Client:
        """The attacker's REST client. The reusable socket is closed first: the chat events
        of what the client changes go to every socket of the user, and one waiting there
        would be read as the answer to the next hostile frame."""
        self.drop_socket()
        return self.user.client()

    def own_socket(self) -> Socket:
        """A socket of the attacker's own, the reusable one closed first (as for ``client``)."""
        self.drop_socket()
        return Socket(self.user)

    def drop_socket(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):  # already broken: only the reconnect matters
                self._socket.close()
            self._socket = None

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every row of both users' chats and messages, and the table sizes."""
        rows = self.server.db.query(
            "SELECT c.id, c.owner, c.title, c.system_prompt, c.model, c.created_at, "
            "c.updated_at, m.id AS message_id, m.role, m.content, m.status, m.completed_at "
            "FROM chat c LEFT JOIN message m ON m.chat = c.id "
            "WHERE c.owner IN (?, ?) ORDER BY c.id, m.id",
            self.user.id,
            self.victim.id,
        )
        counts = self.server.db.query(
            "SELECT (SELECT count(*) FROM chat) AS chats, "
            "(SELECT count(*) FROM message) AS messages, "
            "(SELECT count(*) FROM piccolo_user) AS users"
        )
        return rows, counts


@pytest.fixture(scope="module")
def hostile(server: Server) -> Any:
    user = register_and_login(server)
    victim = register_and_login(server)
    chats = []
    for owner in (user, victim):
        with owner.client() as client:
            created = client.post("/api/chats", json={"title": f"chat of {owner.username}"})
        assert created.status_code == 201, created.text
        chat_id = created.json()["id"]
        insert_message(server.db, chat_id, f"a stored message of {owner.username}")
        chats.append(chat_id)
    state = Hostile(server, user, victim, own_chat=chats[0], other_chat=chats[1])
    yield state
    state.drop_socket()


# --- WebSocket cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class WsCase:
    id: str
    frame: str | bytes
    #: The error code expected, "pong" for a valid frame, or None for no answer at all.
    expect: str | None = INVALID
    request_id: str | None = None  # echoed in the error (docs/protocol.md 4.2)
    chat_id: str | None = None  # named in the error


def ws(case_id: str, data: str | bytes, expect: str | None = INVALID, **named: str) -> Any:
    return pytest.param(WsCase(case_id, data, expect, **named), id=case_id)


SEND = '{"action": "send_message", '
SUBSCRIBE = '{"action": "subscribe", '

WS_CASES = [
    # Not JSON at all.
    ws("text", "not json"),
    ws("empty-text", ""),
    ws("whitespace", "   \n\t "),
    ws("open-brace", "{"),
    ws("close-brace", "}"),
    ws("truncated-object", '{"action": "ping"'),
    ws("single-quotes", "{'action': 'ping'}"),
    ws("unquoted-key", '{action: "ping"}'),
    ws("trailing-comma", '{"action": "ping",}'),
    ws("two-objects", '{"action": "ping"}{"action": "ping"}'),
    ws("trailing-garbage", '{"action": "ping"} x'),
    ws("comment", '{"action": "ping" /* hi */}'),
    ws("nan-literal", '{"action": "ping", "n": NaN}'),
    ws("infinity-literal", '{"action": "ping", "n": Infinity}'),
    ws("raw-nul-in-string", SEND + '"content": "a\x00b"}'),
    ws("raw-newline-in-string", SEND + '"content": "a\nb"}'),
    ws("bad-escape", SEND + '"content": "\\x41"}'),
    ws("truncated-unicode-escape", SEND + '"content": "\\u12"}'),
    # JSON, but not an object.
    ws("null", "null"),
    ws("true", "true"),
    ws("number", "42"),
    ws("string", '"ping"'),
    ws("empty-array", "[]"),
    ws("array-of-frame", '[{"action": "ping"}]'),
    # Binary frames.
    ws("binary-json", b'{"action": "ping"}'),
    ws("binary-junk", b"\x00\x01\xff\xfe"),
    ws("binary-empty", b""),
    ws("binary-utf16", '{"action": "ping"}'.encode("utf-16")),
    # The action tag.
    ws("action-missing", "{}"),
    ws("action-absent-other-key", '{"no_action": 1}'),
    ws("action-int", frame(action=1)),
    ws("action-null", frame(action=None)),
    ws("action-bool", frame(action=True)),
    ws("action-list", frame(action=["ping"])),
    ws("action-object", frame(action={"ping": True})),
    ws("action-empty", frame(action="")),
    ws("action-upper", frame(action="PING")),
    ws("action-padded", frame(action=" ping")),
    ws("action-unknown", frame(action="dance")),
    ws("action-server-type-field", frame(type="ping")),
    ws("action-server-event-name", frame(action="ready")),
    ws("action-proto", frame(action="__proto__")),
    ws("action-nul", '{"action": "p\\u0000ing"}'),
    ws("action-lone-surrogate", '{"action": "\\ud800"}'),
    ws("action-sql", frame(action="ping' OR '1'='1")),
    ws(
        "action-unknown-echoes-request-id",
        frame(action="dance", request_id="r-1"),
        request_id="r-1",
    ),
    # Missing fields.
    ws("send-no-content", frame(action="send_message", request_id="r-2"), request_id="r-2"),
    ws("send-only-chat-id", frame(action="send_message", chat_id=OWN)),
    ws("subscribe-no-chat-id", frame(action="subscribe")),
    ws("unsubscribe-no-chat-id", frame(action="unsubscribe")),
    ws("abort-no-ids", frame(action="abort")),
    ws("abort-null-ids", frame(action="abort", task_id=None, chat_id=None)),
    # Wrong types.
    ws("content-int", frame(action="send_message", content=5)),
    ws("content-null", frame(action="send_message", content=None)),
    ws("content-bool", frame(action="send_message", content=True)),
    ws("content-float", frame(action="send_message", content=1.5)),
    ws("content-list", frame(action="send_message", content=["hi"])),
    ws("content-object", frame(action="send_message", content={"text": "hi"})),
    ws("chat-id-int", frame(action="send_message", content="hi", chat_id=7)),
    ws("chat-id-list", frame(action="subscribe", chat_id=[OWN])),
    ws("chat-id-object", frame(action="subscribe", chat_id={"id": OWN})),
    ws("request-id-int", frame(action="send_message", content="hi", request_id=5)),
    ws("request-id-object", frame(action="ping", request_id={"a": 1})),
    ws("debug-string", frame(action="subscribe", chat_id=OWN, debug="yes")),
    ws("debug-int", frame(action="subscribe", chat_id=OWN, debug=1)),
    ws("debug-null", frame(action="subscribe", chat_id=OWN, debug=None)),
    ws("task-id-int", frame(action="abort", task_id=42)),
    ws("abort-chat-id-bool", frame(action="abort", chat_id=True)),
    # Empty, blank and oversize content.
    ws(
        "content-empty",
        frame(action="send_message", content="", request_id="r-3"),
        request_id="r-3",
    ),
    ws("content-blank", frame(action="send_message", content="   ")),
    ws("content-newlines-tabs", frame(action="send_message", content="\n\t\r\n ")),
    ws("content-blank-in-own-chat", frame(action="send_message", content=" ", chat_id=OWN)),
    ws("content-16001", frame(action="send_message", content="x" * (MAX_CHARS + 1)), "too_large"),
    ws(
        "content-16001-in-own-chat",
        frame(action="send_message", content="x" * (MAX_CHARS + 1), chat_id=OWN),
        "too_large",
    ),
    ws(
        "content-16001-two-byte",
        frame(action="send_message", content="é" * (MAX_CHARS + 1)),
        "too_large",
    ),
    ws(
        "content-16001-emoji",
        frame(action="send_message", content="😀" * (MAX_CHARS + 1)),
        "too_large",
    ),
    ws("content-60000", frame(action="send_message", content="y" * 60_000), "too_large"),
    ws(
        "content-too-large-echoes-request-id",
        frame(action="send_message", content="z" * (MAX_CHARS + 1), request_id="r-4"),
        "too_large",
        request_id="r-4",
    ),
    ws("request-id-201", frame(action="send_message", content="hi", request_id="r" * 201)),
    # Deep nesting.
    ws("nested-arrays", nested(DEEP)),
    ws("nested-objects", '{"a":' * DEEP + "1" + "}" * DEEP),
    ws("nested-unclosed", "[" * 30_000),
    ws("nested-in-unknown-field", '{"action": "ping", "x": ' + nested(DEEP) + "}"),
    ws("nested-unknown-field-first", '{"x": ' + nested(DEEP) + ', "action": "ping"}'),
    ws("nested-content", SEND + '"content": ' + nested(DEEP) + "}"),
    ws("nested-request-id", SEND + '"content": "hi", "request_id": ' + nested(DEEP) + "}"),
    ws("nested-chat-id", SUBSCRIBE + '"chat_id": ' + nested(DEEP) + "}"),
    ws("nested-action", '{"action": ' + nested(DEEP) + "}"),
    # Huge numbers.
    ws("number-1e400-top-level", "1e400"),
    ws("number-1e400-unknown-field", '{"action": "ping", "n": 1e400}'),
    ws("number-1e400-content", SEND + '"content": 1e400}'),
    ws("number-2-70-content", SEND + f'"content": {2**70}}}'),
    ws("number-minus-2-70-content", SEND + f'"content": {-(2**70)}}}'),
    ws("number-10000-digits-content", SEND + '"content": ' + "9" * 10_000 + "}"),
    ws("number-1e400-debug", SUBSCRIBE + f'"chat_id": "{OWN}", "debug": 1e400}}'),
    ws("number-2-70-task-id", f'{{"action": "abort", "task_id": {2**70}}}'),
    ws("number-tiny-chat-id", SUBSCRIBE + '"chat_id": 1e-400}'),
    ws("number-huge-exponent", "1e999999999999999999"),
    # Lone surrogates and NUL in JSON escapes (docs/protocol.md: UTF-8 text).
    ws("surrogate-top-level", '"\\ud800"'),
    ws("surrogate-content-high", SEND + '"content": "\\ud800"}'),
    ws("surrogate-content-low", SEND + '"content": "\\udc00"}'),
    ws("surrogate-content-middle", SEND + '"content": "a\\ud800b"}'),
    ws("surrogate-content-reversed-pair", SEND + '"content": "\\udc00\\ud800"}'),
    ws("surrogate-content-high-then-ascii", SEND + '"content": "\\ud800\\u0041"}'),
    ws("surrogate-chat-id", SUBSCRIBE + '"chat_id": "\\ud800"}'),
    ws("surrogate-request-id", SEND + '"content": "hi", "request_id": "\\udfff"}'),
    ws("nul-in-chat-id", SUBSCRIBE + f'"chat_id": "{OWN}\\u0000"}}'),
    # Invalid UUIDs.
    ws("uuid-word", frame(action="subscribe", chat_id="not-a-uuid")),
    ws("uuid-empty", frame(action="subscribe", chat_id="")),
    ws("uuid-short", frame(action="subscribe", chat_id=UNKNOWN_ID[:-1])),
    ws("uuid-long", frame(action="subscribe", chat_id=UNKNOWN_ID + "0")),
    ws("uuid-trailing-junk", frame(action="subscribe", chat_id=UNKNOWN_ID + "x")),
    ws("uuid-non-hex", frame(action="subscribe", chat_id="g" * 8 + UNKNOWN_ID[8:])),
    ws("uuid-braces", frame(action="subscribe", chat_id="{" + UNKNOWN_ID + "}")),
    ws("uuid-urn", frame(action="subscribe", chat_id="urn:uuid:" + UNKNOWN_ID)),
    ws("uuid-sql", frame(action="subscribe", chat_id="' OR 1=1 --")),
    ws("uuid-path", frame(action="subscribe", chat_id="../../etc/passwd")),
    ws("uuid-send", frame(action="send_message", content="hi", chat_id="nope")),
    ws("uuid-abort-task", frame(action="abort", task_id="zzzz")),
    ws("uuid-abort-chat", frame(action="abort", chat_id="1")),
    ws("uuid-unsubscribe", frame(action="unsubscribe", chat_id="x")),
    # Well-formed ids that are not yours (never reveal that they exist).
    ws(
        "subscribe-unknown",
        frame(action="subscribe", chat_id=UNKNOWN_ID),
        "not_found",
        chat_id=UNKNOWN_ID,
    ),
    ws("subscribe-nil", frame(action="subscribe", chat_id=NIL_ID), "not_found", chat_id=NIL_ID),
    ws(
        "subscribe-other-users",
        frame(action="subscribe", chat_id=OTHER),
        "not_found",
        chat_id=OTHER,
    ),
    ws(
        "send-to-unknown-chat",
        frame(action="send_message", content="hi", chat_id=UNKNOWN_ID, request_id="r-5"),
        "not_found",
        chat_id=UNKNOWN_ID,
        request_id="r-5",
    ),
    ws(
        "send-to-other-users-chat",
        frame(action="send_message", content="hi", chat_id=OTHER),
        "not_found",
        chat_id=OTHER,
    ),
    ws("abort-unknown-task", frame(action="abort", task_id=UNKNOWN_ID), "not_running"),
    ws(
        "abort-unknown-chat",
        frame(action="abort", chat_id=UNKNOWN_ID),
        "not_found",
        chat_id=UNKNOWN_ID,
    ),
    ws(
        "abort-other-users-chat",
        frame(action="abort", chat_id=OTHER),
        "not_found",
        chat_id=OTHER,
    ),
    ws("abort-own-idle-chat", frame(action="abort", chat_id=OWN), "not_running"),
    ws("unsubscribe-unknown", frame(action="unsubscribe", chat_id=UNKNOWN_ID), None),
    ws("unsubscribe-other-users", frame(action="unsubscribe", chat_id=OTHER), None),
    # Unknown fields.
    ws("unknown-field-ping", frame(action="ping", extra=1)),
    ws("unknown-field-role", frame(action="send_message", content="hi", role="assistant")),
    ws("unknown-field-model", frame(action="send_message", content="hi", model="gpt-4")),
    ws("unknown-field-user-id", frame(action="send_message", content="hi", user_id=1)),
    ws("unknown-field-owner", frame(action="subscribe", chat_id=OWN, owner=1)),
    ws("unknown-field-abort", frame(action="abort", chat_id=OWN, reason="x")),
    ws("unknown-field-proto", '{"action": "ping", "__proto__": {"admin": true}}'),
    ws("unknown-field-status", frame(action="send_message", content="hi", status="complete")),
    # Valid frames with odd framing still work.
    ws("ping-padded-to-60000-bytes", '{"action": "ping"}' + " " * 60_000, "pong"),
    ws("ping-surrounding-whitespace", '\n\t {"action":"ping"} \r\n', "pong"),
]


def _recv_or_fail(socket: Socket, case: WsCase, hostile: Hostile, what: str) -> dict[str, Any]:
    try:
        return socket.recv(timeout=10)
    except ConnectionClosed as closed:
        hostile.drop_socket()
        pytest.fail(
            f"{case.id}: the server closed the socket ({closed.rcvd}) instead of {what}; "
            f"frame {case.frame[:120]!r}"
        )
    except TimeoutError:
        hostile.drop_socket()
        pytest.fail(f"{case.id}: no answer within 10 s, expected {what}")


@pytest.mark.parametrize("case", WS_CASES)
def test_hostile_websocket_frame(hostile: Hostile, case: WsCase) -> None:
    data = hostile.resolve(case.frame) if isinstance(case.frame, str) else case.frame
    before = hostile.snapshot()
    socket = hostile.socket()
    socket.send_raw(data)
    if case.expect == "pong":
        assert _recv_or_fail(socket, case, hostile, "pong") == {"type": "pong"}, case.id
    elif case.expect is not None:
        error = _recv_or_fail(socket, case, hostile, f"an error {case.expect!r}")
        assert error.get("type") == "error", f"{case.id}: {error}"
        assert error["code"] == case.expect, f"{case.id}: {error}"
        assert isinstance(error["message"], str), f"{case.id}: {error}"
        assert error["message"], f"{case.id}: {error}"
        assert_no_leak(json.dumps(error), case.id)
        if case.request_id is not None:
            assert error["request_id"] == case.request_id, f"{case.id}: {error}"
        if case.chat_id is not None:
            assert error["chat_id"] == hostile.resolve(case.chat_id), f"{case.id}: {error}"
    # The socket still serves, and nothing else was said in between.
    socket.send(action="ping")
    assert _recv_or_fail(socket, case, hostile, "pong") == {"type": "pong"}, case.id
    assert hostile.snapshot() == before, f"{case.id}: stored data changed"


def test_a_burst_of_bad_frames_is_answered_in_order(hostile: Hostile) -> None:
    frames = [p.values[0].frame for p in WS_CASES[:40]]
    expected = [p.values[0].expect for p in WS_CASES[:40]]
    assert all(code == INVALID for code in expected)
    before = hostile.snapshot()
    socket = hostile.socket()
    for data in frames:
        socket.send_raw(data)
    socket.send(action="ping")
    answers = [socket.recv(timeout=10) for _ in range(len(frames) + 1)]
    assert [a.get("code") for a in answers[:-1]] == expected
    assert answers[-1] == {"type": "pong"}
    assert hostile.snapshot() == before


def test_a_binary_frame_is_told_apart_from_an_empty_text_frame(hostile: Hostile) -> None:
    """A binary frame is named as such, not described as empty JSON text (docs/protocol.md
    4.2): the listener reads frames as text, where a binary frame would come as ``""``."""
    socket = hostile.socket()
    socket.send_raw(b'{"action": "ping"}')
    binary = socket.recv(timeout=10)
    socket.send_raw("")
    empty = socket.recv(timeout=10)
    assert (binary["type"], binary["code"]) == ("error", "invalid_message"), binary
    assert binary["message"] == "frames must be JSON text", binary
    assert empty["code"] == "invalid_message", empty
    assert empty["message"] != "frames must be JSON text", empty
    socket.send(action="ping")
    assert socket.recv(timeout=10) == {"type": "pong"}


@pytest.mark.parametrize(
    "data", [b"x" * (MAX_FRAME_BYTES + 1), "x" * (MAX_FRAME_BYTES + 1)], ids=["binary", "text"]
)
def test_a_frame_over_max_frame_bytes_closes_the_socket_with_1009(
    hostile: Hostile, data: str | bytes
) -> None:
    before = hostile.snapshot()
    if isinstance(data, str):  # a real send_message, one byte over the frame limit
        padding = MAX_FRAME_BYTES + 1 - len(frame(action="send_message", content=""))
        data = frame(action="send_message", content="x" * padding)
        assert len(data.encode()) == MAX_FRAME_BYTES + 1
    with hostile.own_socket() as socket:
        socket.send_raw(data)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None, closed.value
    assert closed.value.rcvd.code == 1009, closed.value
    with hostile.own_socket() as socket:  # the server itself is fine
        socket.send(action="ping")
        assert socket.recv() == {"type": "pong"}
    assert hostile.snapshot() == before


# --- Valid text that looks hostile is stored verbatim ----------------------------------------

HOSTILE_TEXTS = [
    pytest.param("<img src=x onerror=alert(1)>", id="html-img-onerror"),
    pytest.param("<script>alert('x')</script>", id="html-script"),
    pytest.param("'; DROP TABLE chat; --", id="sql-drop"),
    pytest.param("Robert'); DROP TABLE piccolo_user;--", id="sql-bobby-tables"),
    pytest.param("' OR '1'='1", id="sql-or-true"),
    pytest.param("%_\\%\\_ 100% _x_", id="like-wildcards"),
    pytest.param('"quoted" \\backslash\\ `tick` $1 ?', id="quotes-placeholders"),
    pytest.param("{{7*7}} ${jndi:ldap://x/a} %s %n", id="template-injection"),
    pytest.param("\u202etxt.exe \u200b\u200d\ufeff 😀 é ñ 中文", id="unicode-tricks"),
    pytest.param("line one\r\nline two\ttab", id="control-whitespace"),
]


def _stored_chat(server: Server, chat_id: str) -> dict[str, Any]:
    rows = server.db.query(
        "SELECT title, system_prompt FROM chat WHERE id = ?",
        uuid.UUID(chat_id),
    )
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_hostile_looking_titles_are_stored_verbatim(hostile: Hostile, text: str) -> None:
    users_before = hostile.server.db.query("SELECT count(*) AS n FROM piccolo_user")
    with hostile.client() as client:
        created = client.post("/api/chats", json={"title": text, "system_prompt": text})
        assert created.status_code == 201, created.text
        chat = created.json()
        assert chat["title"] == text
        assert chat["system_prompt"] == text
        fetched = client.get(f"/api/chats/{chat['id']}")
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["title"] == text
        renamed = client.patch(f"/api/chats/{chat['id']}", json={"title": text + " (2)"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["title"] == text + " (2)"
        found = client.get("/api/chats", params={"q": text + " (2)", "limit": 200})
        assert found.status_code == 200, found.text
        assert [c["id"] for c in found.json()["items"]] == [chat["id"]]
    stored = _stored_chat(hostile.server, chat["id"])
    assert stored == {"title": text + " (2)", "system_prompt": text}
    # The tables are all still there, with every user in them.
    assert hostile.server.db.query("SELECT count(*) AS n FROM piccolo_user") == users_before


def test_sql_looking_search_matches_literally(hostile: Hostile) -> None:
    user = register_and_login(hostile.server)
    titles = ["plain", "100% sure", "snake_case", "it's", "back\\slash"]
    with user.client() as client:
        ids = {t: client.post("/api/chats", json={"title": t}).json()["id"] for t in titles}
        for query, expected in [
            ("' OR '1'='1", []),
            ("' OR 1=1 --", []),
            ("%", ["100% sure"]),
            ("_", ["snake_case"]),
            ("'", ["it's"]),
            ("\\", ["back\\slash"]),
            ("%' --", []),
            ("*", []),
        ]:
            found = client.get("/api/chats", params={"q": query})
            assert found.status_code == 200, (query, found.text)
            assert {c["id"] for c in found.json()["items"]} == {ids[t] for t in expected}, query


def test_nul_in_a_title_is_stored_verbatim_or_refused(hostile: Hostile) -> None:
    """NUL is a valid JSON string character; PostgreSQL text cannot hold it. Either answer
    is fine (stored and returned verbatim, or 400 invalid_message), a 5xx is not."""
    for title in ["a\x00b", "\x00"]:
        before = hostile.snapshot()
        with hostile.client() as client:
            response = client.post("/api/chats", json={"title": title})
        assert response.status_code in (201, 400), (repr(title), response.text)
        assert_no_leak(response.text, repr(title))
        if response.status_code == 400:
            assert response.json()["code"] == INVALID
            assert hostile.snapshot() == before
        else:
            assert response.json()["title"] == title
            assert _stored_chat(hostile.server, response.json()["id"])["title"] == title


def test_hostile_looking_message_streams_and_is_stored_verbatim(hostile: Hostile) -> None:
    """A real generation: HTML and SQL in the content, garbage frames sent mid-stream do
    not disturb it (docs/protocol.md section 2), and the message comes back byte for byte."""
    mark = f"m-{secrets.token_hex(4)}"
    content = (
        f"<img src=x onerror=alert(1)> '; DROP TABLE message; -- {mark}\n"
        '<script>document.cookie</script> " \\ %_ \u202e 😀 ' + directive(tokens=20, rate=100)
    )
    garbage = ["not json", b"\x01", "{}", frame(action="dance"), nested(DEEP), '"\\ud800"']
    with hostile.own_socket() as socket:
        started = socket.start(content, request_id="<b>r</b>")
        assert started["request_id"] == "<b>r</b>"
        for data in garbage:
            socket.send_raw(data)
        frames = socket.until_end(started["task_id"])
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == [INVALID] * len(garbage), errors
    assert all(e["task_id"] is None for e in errors), errors
    done = frames[-1]
    assert done["type"] == "done", done
    text = "".join(t["token"] for t in tokens_of(frames, started["task_id"]))
    assert text == done["message"]["content"] == Script(tokens=20).expected_text()
    with hostile.client() as client:
        chat = client.get(f"/api/chats/{started['chat_id']}").json()
    assert chat["title"] == content.splitlines()[0][: len(chat["title"])]
    assert chat["title"].startswith("<img src=x onerror=alert(1)> '; DROP TABLE message;")
    assert [m["content"] for m in chat["messages"]] == [content, text]
    rows = hostile.server.db.query(
        "SELECT content FROM message WHERE role = 'user' AND content LIKE ?", f"%{mark}%"
    )
    assert [r["content"] for r in rows] == [content]


def test_hostile_looking_message_over_rest_is_stored_verbatim(hostile: Hostile) -> None:
    content = "Robert'); DROP TABLE chat;-- <svg onload=alert(1)> " + directive(tokens=2)
    with hostile.client() as client:
        chat = client.post("/api/chats", json={}).json()
        reply = client.post(f"/api/chats/{chat['id']}/messages", json={"content": content})
        assert reply.status_code == 200, reply.text
        assert reply.json()["message"]["status"] == "complete"
        messages = client.get(f"/api/chats/{chat['id']}/messages").json()["items"]
    assert [m["content"] for m in messages] == [content, Script(tokens=2).expected_text()]


def test_nul_in_a_message_is_stored_verbatim_or_refused(hostile: Hostile) -> None:
    """Valid JSON (``"\\u0000"``): either stored and returned verbatim, or refused with
    ``invalid_message`` and nothing stored; never ``internal``."""
    mark = f"m-{secrets.token_hex(4)}"
    content = f"nul \x00 byte {mark} " + directive(tokens=2)
    before = hostile.snapshot()
    with hostile.own_socket() as socket:
        socket.send(action="send_message", content=content, chat_id=hostile.own_chat)
        frames = socket.until(lambda f: f["type"] in ("done", "error", "aborted"))
        socket.send(action="ping")
        assert socket.recv() == {"type": "pong"}
    last = frames[-1]
    if last["type"] == "error":
        assert last["code"] == INVALID, frames
        assert hostile.snapshot() == before
        return
    assert last["type"] == "done", frames
    with hostile.client() as client:
        messages = client.get(f"/api/chats/{hostile.own_chat}/messages").json()["items"]
    assert messages[-2]["content"] == content


# --- REST cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RestCase:
    id: str
    method: str
    path: str
    status: int
    code: str | None  # None: any non-empty code
    body: Any = None  # JSON-encoded unless bytes or str
    headers: tuple[tuple[str, str], ...] = ()


JSON = (("content-type", "application/json"),)


def rest(
    case_id: str,
    method: str,
    path: str,
    status: int,
    body: Any = None,
    *,
    code: str | bool | None = True,
    headers: tuple[tuple[str, str], ...] = JSON,
) -> Any:
    default = {400: INVALID, 404: "not_found", 409: "not_running", 413: "too_large"}
    expected_code = default.get(status) if code is True else code
    assert not isinstance(expected_code, bool)
    case = RestCase(case_id, method, path, status, expected_code, body, headers)
    return pytest.param(case, id=case_id)


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CHATS = "/api/chats"
MINE = f"/api/chats/{OWN}"
THEIRS = f"/api/chats/{OTHER}"
BAD_UTF8_CURSOR = _cursor(b"\xff\xfe\xfd")
SURROGATE_CURSOR = _cursor(b'["\\ud800", "x"]')
YEAR_99999_CURSOR = _cursor(f'["99999-01-01T00:00:00Z", "{UNKNOWN_ID}"]'.encode())
BIG_BODY = b'{"title": "' + b"x" * 11_000_000 + b'"}'

REST_CASES = [
    # Bodies that are not JSON, or not the right JSON.
    rest("create-not-json", "POST", CHATS, 400, "not json"),
    rest("create-open-brace", "POST", CHATS, 400, "{"),
    rest("create-empty-body", "POST", CHATS, 400, ""),
    rest("create-array", "POST", CHATS, 400, "[]"),
    rest("create-null", "POST", CHATS, 400, "null"),
    rest("create-string", "POST", CHATS, 400, '"title"'),
    rest("create-number", "POST", CHATS, 400, "1e400"),
    rest("create-trailing-garbage", "POST", CHATS, 400, '{"title": "x"} x'),
    rest("create-single-quotes", "POST", CHATS, 400, "{'title': 'x'}"),
    rest("create-nan", "POST", CHATS, 400, '{"title": NaN}'),
    rest("create-title-int", "POST", CHATS, 400, {"title": 5}),
    rest("create-title-null", "POST", CHATS, 400, {"title": None}),
    rest("create-title-list", "POST", CHATS, 400, {"title": ["x"]}),
    rest("create-title-201", "POST", CHATS, 400, {"title": "x" * 201}),
    rest("create-system-prompt-32001", "POST", CHATS, 400, {"system_prompt": "p" * 32_001}),
    rest("create-model-empty", "POST", CHATS, 400, {"model": ""}),
    rest("create-model-space", "POST", CHATS, 400, {"model": "gpt 4"}),
    rest("create-model-sql", "POST", CHATS, 400, {"model": "x'; DROP TABLE chat;--"}),
    rest("create-model-html", "POST", CHATS, 400, {"model": "<img src=x>"}),
    rest("create-model-201", "POST", CHATS, 400, {"model": "m" * 201}),
    # Well-formed, but not offered (MODELS): the operator's key pays for it (issue 12).
    rest("create-model-not-offered", "POST", CHATS, 422, {"model": "o1-pro"}, code=INVALID),
    rest("create-unknown-field-owner", "POST", CHATS, 400, {"title": "x", "owner": 1}),
    rest("create-unknown-field-id", "POST", CHATS, 400, {"id": UNKNOWN_ID}),
    rest("create-unknown-field-created-at", "POST", CHATS, 400, {"created_at": "2020-01-01"}),
    rest("create-nested-arrays", "POST", CHATS, 400, nested(DEEP)),
    rest("create-nested-title", "POST", CHATS, 400, '{"title": ' + nested(DEEP) + "}"),
    rest("create-nested-unknown-field", "POST", CHATS, 400, '{"x": ' + nested(DEEP) + "}"),
    rest("create-title-1e400", "POST", CHATS, 400, '{"title": 1e400}'),
    rest("create-title-2-70", "POST", CHATS, 400, f'{{"title": {2**70}}}'),
    rest("create-title-lone-surrogate", "POST", CHATS, 400, '{"title": "\\ud800"}'),
    rest("create-title-reversed-surrogates", "POST", CHATS, 400, '{"title": "\\udc00\\ud800"}'),
    rest("create-raw-nul-in-string", "POST", CHATS, 400, b'{"title": "a\x00b"}'),
    rest("create-invalid-utf8", "POST", CHATS, 400, b'{"title": "\xff\xfe"}'),
    rest("create-overlong-utf8", "POST", CHATS, 400, b'{"title": "\xc0\xaf"}'),
    rest("create-utf8-encoded-surrogate", "POST", CHATS, 400, b'{"title": "\xed\xa0\x80"}'),
    rest("create-over-request-size", "POST", CHATS, 413, BIG_BODY),
    # Wrong content types: 415, the body is never read (docs/protocol.md).
    rest(
        "create-form-encoded",
        "POST",
        CHATS,
        415,
        "title=x",
        headers=(("content-type", "application/x-www-form-urlencoded"),),
    ),
    rest(
        "create-xml",
        "POST",
        CHATS,
        415,
        "<chat><title>x</title></chat>",
        headers=(("content-type", "application/xml"),),
    ),
    rest(
        "create-multipart",
        "POST",
        CHATS,
        415,
        '--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nx\r\n--b--\r\n',
        headers=(("content-type", "multipart/form-data; boundary=b"),),
    ),
    rest(
        "create-latin1-body",
        "POST",
        CHATS,
        400,
        '{"title": "café"}'.encode("latin-1"),
        headers=(("content-type", "application/json; charset=latin-1"),),
    ),
    # PATCH.
    rest("patch-title-null", "PATCH", MINE, 400, {"title": None}),
    rest("patch-title-int", "PATCH", MINE, 400, {"title": 5}),
    rest("patch-title-201", "PATCH", MINE, 400, {"title": "t" * 201}),
    rest("patch-not-json", "PATCH", MINE, 400, "title=x"),
    rest("patch-unknown-owner", "PATCH", MINE, 400, {"owner": 2}),
    rest("patch-unknown-id", "PATCH", MINE, 400, {"id": UNKNOWN_ID}),
    rest("patch-unknown-updated-at", "PATCH", MINE, 400, {"updated_at": "2000-01-01T00:00:00Z"}),
    rest("patch-model-sql", "PATCH", MINE, 400, {"model": "' OR 1=1"}),
    rest("patch-model-not-offered", "PATCH", MINE, 422, {"model": "o1-pro"}, code=INVALID),
    rest("patch-surrogate", "PATCH", MINE, 400, '{"title": "\\udfff"}'),
    rest("patch-invalid-utf8", "PATCH", MINE, 400, b'{"title": "\x80"}'),
    rest("patch-nested", "PATCH", MINE, 400, '{"title": ' + nested(DEEP) + "}"),
    rest("patch-other-users-chat", "PATCH", THEIRS, 404, {"title": "mine now"}),
    rest("patch-unknown-chat", "PATCH", f"{CHATS}/{UNKNOWN_ID}", 404, {"title": "x"}),
    rest("patch-bad-uuid", "PATCH", f"{CHATS}/not-a-uuid", 400, {"title": "x"}),
    # Ids in paths.
    rest("get-bad-uuid", "GET", f"{CHATS}/not-a-uuid", 400),
    rest("get-uuid-short", "GET", f"{CHATS}/{UNKNOWN_ID[:-1]}", 400),
    rest("get-uuid-trailing-junk", "GET", f"{CHATS}/{UNKNOWN_ID}x", 400),
    rest("get-uuid-sql", "GET", f"{CHATS}/%27%20OR%201%3D1--", 400),
    rest("get-uuid-nul", "GET", f"{CHATS}/{UNKNOWN_ID[:-1]}%00", 400),
    rest("get-uuid-html", "GET", f"{CHATS}/%3Cscript%3E", 400),
    rest("get-unknown-chat", "GET", f"{CHATS}/{UNKNOWN_ID}", 404),
    rest("get-nil-chat", "GET", f"{CHATS}/{NIL_ID}", 404),
    rest("get-other-users-chat", "GET", THEIRS, 404),
    rest("get-other-users-messages", "GET", f"{THEIRS}/messages", 404),
    rest("delete-bad-uuid", "DELETE", f"{CHATS}/not-a-uuid", 400),
    rest("delete-other-users-chat", "DELETE", THEIRS, 404),
    rest("delete-unknown-chat", "DELETE", f"{CHATS}/{UNKNOWN_ID}", 404),
    # limit, cursor, before, q.
    rest("limit-zero", "GET", f"{MINE}/messages?limit=0", 400),
    rest("limit-negative", "GET", f"{MINE}/messages?limit=-1", 400),
    rest("limit-201", "GET", f"{MINE}/messages?limit=201", 400),
    rest("limit-2-70", "GET", f"{MINE}/messages?limit={2**70}", 400),
    rest("limit-minus-2-70", "GET", f"{CHATS}?limit=-{2**70}", 400),
    rest("limit-1e400", "GET", f"{CHATS}?limit=1e400", 400),
    rest("limit-float", "GET", f"{CHATS}?limit=1.5", 400),
    rest("limit-nan", "GET", f"{CHATS}?limit=NaN", 400),
    rest("limit-word", "GET", f"{CHATS}?limit=abc", 400),
    rest("limit-sql", "GET", f"{CHATS}?limit=1%3B%20DROP%20TABLE%20chat", 400),
    rest("limit-empty", "GET", f"{CHATS}?limit=", 400),
    rest("cursor-garbage", "GET", f"{CHATS}?cursor=garbage", 400),
    rest("cursor-201", "GET", f"{CHATS}?cursor={'c' * 201}", 400),
    rest("cursor-wrong-shape", "GET", f"{CHATS}?cursor={_cursor(b'[1, 2]')}", 400),
    rest("cursor-nested", "GET", f"{CHATS}?cursor={_cursor(nested(100).encode())}", 400),
    rest("cursor-invalid-utf8", "GET", f"{CHATS}?cursor={BAD_UTF8_CURSOR}", 400),
    rest("cursor-year-99999", "GET", f"{CHATS}?cursor={YEAR_99999_CURSOR}", 400),
    rest("cursor-surrogate", "GET", f"{CHATS}?cursor={SURROGATE_CURSOR}", 400),
    rest("cursor-sql", "GET", f"{CHATS}?cursor=%27%20OR%201%3D1--", 400),
    rest("before-garbage", "GET", f"{MINE}/messages?before=%%%", 400),
    rest("before-wrong-shape", "GET", f"{MINE}/messages?before={_cursor(b'{}')}", 400),
    rest("q-empty", "GET", f"{CHATS}?q=", 400),
    rest("q-201", "GET", f"{CHATS}?q={'q' * 201}", 400),
    rest("users-zero", "GET", "/api/users/0/chats", 400),
    rest("users-negative", "GET", "/api/users/-1/chats", 400),
    rest("users-2-70", "GET", f"/api/users/{2**70}/chats", 400),
    rest("users-1e400", "GET", "/api/users/1e400/chats", 400),
    rest("users-word", "GET", "/api/users/abc/chats", 400),
    rest("users-other", "GET", f"/api/users/{VICTIM}/chats", 404),
    rest("users-bad-limit", "GET", f"/api/users/{VICTIM}/chats?limit=0", 400),
    # Generation requests.
    rest("message-empty", "POST", f"{MINE}/messages", 400, {"content": ""}),
    rest("message-blank", "POST", f"{MINE}/messages", 400, {"content": " \n\t"}),
    rest("message-16001", "POST", f"{MINE}/messages", 413, {"content": "x" * (MAX_CHARS + 1)}),
    rest("message-content-int", "POST", f"{MINE}/messages", 400, {"content": 5}),
    rest("message-content-1e400", "POST", f"{MINE}/messages", 400, '{"content": 1e400}'),
    rest("message-no-content", "POST", f"{MINE}/messages", 400, {}),
    rest(
        "message-unknown-role",
        "POST",
        f"{MINE}/messages",
        400,
        {"content": "x", "role": "assistant"},
    ),
    rest("message-surrogate", "POST", f"{MINE}/messages", 400, '{"content": "\\ud800"}'),
    rest("message-invalid-utf8", "POST", f"{MINE}/messages", 400, b'{"content": "\xfe"}'),
    rest("message-nested", "POST", f"{MINE}/messages", 400, '{"content": ' + nested(DEEP) + "}"),
    rest("message-bad-uuid", "POST", f"{CHATS}/nope/messages", 400, {"content": "x"}),
    rest("message-unknown-chat", "POST", f"{CHATS}/{UNKNOWN_ID}/messages", 404, {"content": "x"}),
    rest("message-other-users-chat", "POST", f"{THEIRS}/messages", 404, {"content": "x"}),
    rest("abort-bad-uuid", "POST", f"{CHATS}/nope/abort", 400),
    rest("abort-unknown-chat", "POST", f"{CHATS}/{UNKNOWN_ID}/abort", 404),
    rest("abort-other-users-chat", "POST", f"{THEIRS}/abort", 404),
    rest("abort-idle-chat", "POST", f"{MINE}/abort", 409),
    # Login and register with hostile bodies.
    rest("login-not-json", "POST", "/api/auth/login", 400, "{nope"),
    rest("login-types", "POST", "/api/auth/login", 400, {"username": 5, "password": ["x"]}),
    rest("login-nested", "POST", "/api/auth/login", 400, '{"username": ' + nested(DEEP) + "}"),
    rest(
        "login-surrogate",
        "POST",
        "/api/auth/login",
        400,
        '{"username": "\\ud800", "password": "x"}',
    ),
    rest(
        "login-invalid-utf8",
        "POST",
        "/api/auth/login",
        400,
        b'{"username": "\xff", "password": "x"}',
    ),
    rest(
        "login-sql-username",
        "POST",
        "/api/auth/login",
        401,
        {"username": "' OR '1'='1' --", "password": "' OR '1'='1"},
        code="unauthorized",
    ),
    rest(
        "login-form-garbage",
        "POST",
        "/api/auth/login",
        400,
        "%%%&&&==",
        headers=(("content-type", "application/x-www-form-urlencoded"),),
    ),
    rest(
        "login-multipart",
        "POST",
        "/api/auth/login",
        415,
        '--b\r\nContent-Disposition: form-data; name="username"\r\n\r\nx\r\n--b--\r\n',
        headers=(("content-type", "multipart/form-data; boundary=b"),),
    ),
    rest(
        "register-sql-username",
        "POST",
        "/api/auth/register",
        400,
        {"username": "a'; DROP TABLE piccolo_user;--", "password": "long enough"},
    ),
    rest(
        "register-html-username",
        "POST",
        "/api/auth/register",
        400,
        {"username": "<img src=x>", "password": "long enough"},
    ),
    rest(
        "register-nul-username",
        "POST",
        "/api/auth/register",
        400,
        {"username": "abc\x00def", "password": "long enough"},
    ),
    rest(
        "register-nested", "POST", "/api/auth/register", 400, '{"username": ' + nested(DEEP) + "}"
    ),
    rest(
        "register-unknown-field-staff",
        "POST",
        "/api/auth/register",
        400,
        {"username": "would_be_admin", "password": "long enough", "superuser": True},
    ),
    # Routing.
    rest("unknown-route", "GET", "/api/nope", 404),
    rest("wrong-method", "PUT", CHATS, 405, {"title": "x"}, code=None),
]


def _send(client: httpx.Client, case: RestCase, hostile: Hostile) -> httpx.Response:
    body = case.body
    if body is None:
        content = None
    elif isinstance(body, bytes):
        content = body
    elif isinstance(body, str):
        content = hostile.resolve(body).encode()
    else:
        content = json.dumps(body).encode()
    return client.request(
        case.method, hostile.resolve(case.path), content=content, headers=dict(case.headers)
    )


@pytest.mark.parametrize("case", REST_CASES)
def test_hostile_rest_request(hostile: Hostile, case: RestCase) -> None:
    before = hostile.snapshot()
    logged_before = len(hostile.server.log())
    with hostile.client() as client:
        response = _send(client, case, hostile)
    answer = f"{case.id}: {response.status_code} {response.text[:400]}"
    assert response.status_code < 500, answer
    assert response.status_code == case.status, answer
    assert response.headers.get("content-type", "").startswith("application/json"), answer
    body = response.json()
    assert body.get("status_code") == case.status, answer
    assert isinstance(body.get("code"), str), answer
    assert body["code"], answer
    if case.code is not None:
        assert body["code"] == case.code, answer
    assert_no_leak(response.text, case.id)
    assert hostile.snapshot() == before, f"{case.id}: stored data changed"
    # A client's mistake is one line in the log, never a traceback (an ERROR to page on).
    logged = hostile.server.log()[logged_before:]
    assert "Traceback" not in logged, f"{case.id}: {logged[-2000:]}"


def test_other_users_chat_answers_match_unknown_ones(hostile: Hostile) -> None:
    with hostile.client() as client:
        for suffix in ("", "/messages"):
            theirs = client.get(f"/api/chats/{hostile.other_chat}{suffix}")
            unknown = client.get(f"/api/chats/{UNKNOWN_ID}{suffix}")
            assert theirs.status_code == unknown.status_code == 404
            assert theirs.content == unknown.content


NUL_LOOKUPS = [
    pytest.param("GET", "/api/chats?q=zz%00{mark}", None, (), id="search"),
    pytest.param("GET", "/api/search?q=zz%00{mark}", None, (), id="full-text-search"),
    pytest.param(
        "POST",
        "/api/auth/login",
        b'{"username": "abc\\u0000def", "password": "whatever1"}',
        JSON,
        id="login-json",
    ),
    pytest.param(
        "POST",
        "/api/auth/login",
        b"username=abc%00def&password=whatever1",
        (("content-type", "application/x-www-form-urlencoded"),),
        id="login-form",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), NUL_LOOKUPS)
def test_nul_in_a_lookup_is_never_a_server_error(
    hostile: Hostile,
    method: str,
    path: str,
    body: bytes | None,
    headers: tuple[tuple[str, str], ...],
) -> None:
    """NUL in text that only reaches a WHERE clause: no match (200 empty, 401) or 400."""
    path = path.format(mark=secrets.token_hex(4))
    with hostile.client() as client:
        response = client.request(method, path, content=body, headers=dict(headers))
    answer = f"{response.status_code} {response.text[:300]}"
    assert response.status_code < 500, answer
    assert_no_leak(response.text, answer)
    if response.status_code == 200:
        assert response.json()["items"] == [], answer
    else:
        expected = {400: INVALID, 401: "unauthorized"}
        assert expected.get(response.status_code) == response.json()["code"], answer
