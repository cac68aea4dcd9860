"""A fake OpenAI-compatible upstream: a real HTTP server on a loopback port.

It speaks ``POST /v1/chat/completions`` as OpenAI does: streamed (chunked
``text/event-stream`` with chunk objects, a usage chunk and ``[DONE]``) or
not. What it does is scripted per request: a directive in the last user message,
``[[fake {"tokens": 50, "rate": 20}]]``, overrides the server's default
``Script``. Every request leaves a ``Record``: what the client sent, how many
tokens went out, and whether and when the client hung up.

A request that is not streamed (chatsvc names a chat that way) gets one whole
``chat.completion``: the tokens' text, or ``unstreamed_text``; ``unstreamed_status``
answers it with that HTTP error instead.

Tool calls: ``directive(tool_calls=[{"name": "tree_add_node", "arguments":
{...}}])`` makes the fake answer with those calls (streamed in pieces, as real
servers do: a first chunk with the call's id and name, then fragments of its
arguments), and once the client comes back with the results, with the normal
text tokens. ``rounds=[[calls], [calls]]`` scripts several rounds;
``loop_tools`` asks for calls every round, forever. The directive stays in the
user message, so it scripts every round of a reply: the round is the number of
tool-call turns the client sent back after it (``Record.round``).

Profiles: ``Script.profile`` names the real server whose stream the fake
reproduces ("openai", "vllm", "ollama", "llama-cpp-python", "llama-server");
what each sends its own way is one ``Profile`` in ``PROFILES`` (see
docs/operations.md, "Model servers"). ``reject_stream_options`` answers 400 to a request
carrying ``stream_options``, as servers that do not know the field do.

It runs its own asyncio loop in a thread, so tests, benchmarks and the real
openai SDK in the server under test all talk to it over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

_DIRECTIVE = "[[fake "
_GONE, _ERROR = "<client gone>", "<error event sent>"  # how a streamed answer stopped early
ARGUMENT_PIECE = 7  # characters of a tool call's arguments per chunk
STREAM_OPTIONS_REFUSAL = "Unrecognized request argument supplied: stream_options"  # Azure's words


@dataclass(frozen=True)
class Profile:
    """What one real server streams its own way (checked in its source, issue 13)."""

    first_delta: dict[str, Any]  # the delta of the first chunk
    reasoning_key: str = "reasoning_content"  # the delta field reasoning comes in
    usage_when_asked: bool = True  # a last chunk, `choices: []`, on `stream_options.include_usage`
    timings: bool = False  # llama.cpp's `timings` object on the last chunk
    streams_tools: bool = True  # False: tools offered with `stream` are ignored, text comes
    whole_tool_calls: bool = False  # each call in one chunk (id, name, all its arguments)
    error: dict[str, Any] | None = None  # sent as `data: {"error": ...}`; None: the body breaks off
    done_after_error: bool = True  # `data: [DONE]` follows the error event


PROFILES: dict[str, Profile] = {
    "openai": Profile(
        first_delta={"role": "assistant", "content": ""},
        error={"message": "boom", "type": "server_error", "param": None, "code": None},
    ),
    # vLLM (serving_chat.py): `reasoning_content` (newer releases name it `reasoning`); an
    # error mid-stream is `create_streaming_error_response`, then `[DONE]`.
    "vllm": Profile(
        first_delta={"role": "assistant", "content": ""},
        error={"message": "boom", "type": "InternalServerError", "param": None, "code": 500},
    ),
    # Ollama (openai/openai.go, middleware/openai.go): `reasoning`, a tool call whole in one
    # chunk, usage in a chunk of its own when asked; its error object is `openai.NewError`'s.
    "ollama": Profile(
        first_delta={"role": "assistant", "content": ""},
        reasoning_key="reasoning",
        whole_tool_calls=True,
        error={"message": "boom", "type": "api_error", "param": None, "code": None},
    ),
    # llama-cpp-python (server/app.py): no usage chunk at all; tools are not streamed (ignored
    # by most chat formats); an exception mid-stream ends the body with no event at all.
    "llama-cpp-python": Profile(
        first_delta={"role": "assistant"},
        usage_when_asked=False,
        streams_tools=False,
        error=None,
    ),
    # llama.cpp's llama-server (tools/server): `content: null` first, `timings` on the last
    # chunk; an error mid-stream is `data: {"error": {...}}` and the stream ends, no `[DONE]`.
    "llama-server": Profile(
        first_delta={"role": "assistant", "content": None},
        timings=True,
        error={"code": 500, "message": "boom", "type": "server_error"},
        done_after_error=False,
    ),
}


@dataclass(frozen=True)
class Script:
    """How the fake answers one request."""

    tokens: int = 5
    rate: float = 0.0  # tokens per second; 0 sends them as fast as the socket takes them
    status: int | None = None  # answer with this HTTP error status instead
    fail_times: int = 0  # answer the first N attempts of the same messages with `status` or 503
    header_delay: float = 0.0  # seconds before the response starts (a server slow to answer)
    drop_after: int | None = None  # close the connection after this many tokens
    stall_after: int | None = None  # stop sending (connection left open) after this many
    error_after: int | None = None  # send an `error` event after this many tokens
    error_joined: bool = False  # ...in the same write as those tokens (one read for the client)
    garbage_after: int | None = None  # send an event that is not JSON after this many tokens
    reasoning: int = 0  # reasoning deltas before the content (at `rate`, as tokens are)
    # A request that is not streamed (a chat's title): answer with this text (default: the
    # tokens' text), or with this HTTP error status, after this many seconds.
    unstreamed_text: str | None = None
    unstreamed_status: int | None = None
    unstreamed_delay: float = 0.0
    timestamps: bool = False  # each token carries its send time: "t<i>@<unix time> "
    pad: int = 0  # characters of padding in every token (large replies, quickly)
    finish_reason: str = "stop"
    bare_done: bool = False  # end with `data: [DONE]` alone: no finish chunk, no usage
    usage: bool = True  # False: a server that ignores `stream_options` (no usage, ever)
    profile: str = "openai"  # the real server reproduced: a key of PROFILES
    reject_stream_options: bool = False  # answer 400 to a request carrying `stream_options`
    #: The model's context in tokens (prompt characters / 4); a longer prompt overflows,
    #: answered as the profile's server does; the server-wide one is stated at /models.
    context_tokens: int | None = None
    # Tool calls, each {"name", "arguments": object, or a string sent as is (even malformed)}.
    tool_calls: list[dict[str, Any]] | None = None  # the calls of one round: rounds=[tool_calls]
    rounds: list[list[dict[str, Any]]] | None = None  # the calls of each round, then text
    loop_tools: bool = False  # every round asks for `calls_per_round` tree_add_node calls
    calls_per_round: int = 1
    round_tokens: int = 0  # text tokens sent in a round before its tool calls
    round_delay: float = 0.0  # seconds before answering a request that brings tool results

    def calls_for(self, round_: int) -> list[dict[str, Any]] | None:
        """The tool calls of round ``round_`` (0 first), or ``None``: answer with text."""
        if self.loop_tools:
            return [
                {"name": "tree_add_node", "arguments": {"parent_id": "root", "value": f"loop {i}"}}
                for i in range(self.calls_per_round)
            ]
        rounds = self.rounds or ([self.tool_calls] if self.tool_calls else [])
        return rounds[round_] if round_ < len(rounds) else None

    def token(self, index: int) -> str:
        if self.timestamps:
            return f"t{index}@{time.time():.6f} "
        return f"t{index}{'.' * self.pad} "

    def expected_text(self) -> str:
        """The content a client should end up with when nothing interrupts the stream."""
        return "".join(f"t{i}{'.' * self.pad} " for i in range(self.tokens))


@dataclass
class Record:
    """One request as the fake saw it."""

    id: str
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    script: Script
    body: dict[str, Any]
    started_at: float = field(default_factory=time.time)
    tokens_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    disconnected_at: float | None = None
    tool_calls_sent: int = 0
    overflowed: bool = False  # the prompt was longer than `context_tokens`

    @property
    def last_user_message(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def since_user(self) -> list[dict[str, Any]]:
        """The messages after the last user message: the tool rounds of this reply so far."""
        last = max((i for i, m in enumerate(self.messages) if m.get("role") == "user"), default=-1)
        return self.messages[last + 1 :]

    @property
    def round(self) -> int:
        """How many rounds of tool calls the client reported back in this request."""
        return sum(
            1 for m in self.since_user if m.get("role") == "assistant" and m.get("tool_calls")
        )

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool`` messages of this reply so far (every round), content decoded."""
        return [
            {**m, "content": json.loads(m["content"])}
            for m in self.since_user
            if m["role"] == "tool"
        ]

    def estimated_usage(self, streamed: str) -> dict[str, Any]:
        """What chatsvc estimates this request cost when the server sends no usage (issue
        16): 4 characters a token, rounded up, of what was sent (messages, their tool calls,
        the tools offered) and of ``streamed`` (the text, or the tool calls, it answered)."""
        sent = sum(
            len(m.get("content") or "")
            + sum(
                len(c["function"]["name"]) + len(c["function"]["arguments"])
                for c in m.get("tool_calls") or ()
            )
            for m in self.messages
        )
        if "tools" in self.body:
            sent += len(json.dumps(self.body["tools"], separators=(",", ":"), ensure_ascii=False))
        return {
            "prompt_tokens": math.ceil(sent / 4),
            "completion_tokens": math.ceil(len(streamed) / 4),
            "estimated": True,
        }


class FakeOpenAI:
    def __init__(self, default: Script | None = None) -> None:
        self.default = default or Script()
        self.records: list[Record] = []
        self._attempts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    # --- lifetime ---------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._thread.start()
        # Named TCP, so that asyncio turns Nagle's algorithm off on every connection, as it
        # does on the sockets it makes itself (and as model servers do): it skips a socket
        # made with protocol 0. With Nagle on, each chunk written while the previous one is
        # unacknowledged waited for the client's delayed ACK, about 40 ms on Linux.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, sock=sock, backlog=1024), self._loop
        ).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            # And the connections still open (a server's keep-alive pool): each handler,
            # cancelled, closes its own, rather than leaving a transport for the garbage
            # collector to warn about in whatever test runs then. A connection accepted as
            # the server closed starts its handler a step later: sweep until none is left.
            for _ in range(10):
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not handlers:
                    break
                for handler in handlers:
                    handler.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- what tests ask ---------------------------------------------------------------

    def find(self, marker: str, timeout: float = 10) -> Record:
        """The request whose last user message contains ``marker`` (waits for it)."""
        return self.wait_for(lambda: self._find(marker), timeout, f"a request with {marker!r}")

    def _find(self, marker: str) -> Record | None:
        return next((r for r in self.records if marker in r.last_user_message), None)

    def records_for(self, marker: str) -> list[Record]:
        """Every request whose last user message contains ``marker`` (a reply's rounds)."""
        return [r for r in self.records if marker in r.last_user_message]

    def wait_for(self, check: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            time.sleep(0.01)
        raise AssertionError(f"the fake upstream never saw {what or check}")

    # --- HTTP -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: requests one after another while each answer completes (keep-alive)."""
        try:
            keep_alive = True
            while keep_alive:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in header_lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                method, path, _ = request_line.split(" ", 2)
                if method == "GET":
                    await self._get(writer, path)
                    continue
                if method != "POST" or not path.endswith("/chat/completions"):
                    await self._send_error(writer, 404, "not found")
                    return
                keep_alive = await self._completion(reader, writer, json.loads(body))
                keep_alive = keep_alive and headers.get("connection", "").lower() != "close"
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _script_for(self, messages: list[dict[str, Any]]) -> Script:
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        last = users[-1] if users else ""
        start = last.find(_DIRECTIVE) if isinstance(last, str) else -1
        if start < 0:
            return self.default
        # The JSON object itself ends the directive (it may nest `]]`, as tool call lists do).
        script, _ = json.JSONDecoder().raw_decode(last, start + len(_DIRECTIVE))
        return replace(self.default, **script)

    async def _completion(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict[str, Any]
    ) -> bool:
        """Answer one request; ``True`` when the connection can serve another."""
        script = self._script_for(body.get("messages", []))
        record = Record(
            id=f"chatcmpl-{uuid.uuid4().hex[:12]}",
            model=body.get("model", ""),
            messages=body.get("messages", []),
            stream=bool(body.get("stream")),
            script=script,
            body=body,
        )
        self.records.append(record)
        if script.fail_times:
            key = json.dumps(record.messages)
            self._attempts[key] = self._attempts.get(key, 0) + 1
            if self._attempts[key] <= script.fail_times:
                await self._send_error(writer, script.status or 503, "scripted failure")
                return False
        elif script.status is not None:
            await self._send_error(writer, script.status, "scripted failure")
            return False
        if script.reject_stream_options and "stream_options" in body:
            await self._refuse_stream_options(writer)
            return False
        if script.context_tokens is not None and script.profile != "ollama":  # Ollama truncates
            prompt = sum(len(str(m.get("content") or "")) for m in record.messages) // 4
            if prompt > script.context_tokens:
                record.overflowed = True
                await self._overflow(writer, script, prompt)
                return False
        if script.header_delay:
            await asyncio.sleep(script.header_delay)
        if not record.stream:
            await asyncio.sleep(script.unstreamed_delay)
            if script.unstreamed_status is not None:
                await self._send_error(writer, script.unstreamed_status, "scripted failure")
                return False
            await self._send_whole(writer, record)
            return True
        # While streaming, a read that ends means the client hung up.
        watcher = asyncio.create_task(self._watch_disconnect(reader, record))
        try:
            await self._stream(writer, record, watcher)
        except ConnectionError:
            self._hung_up(record)
        finally:
            watcher.cancel()
        return record.completed

    async def _get(self, writer: asyncio.StreamWriter, path: str) -> None:
        """``/v1/models`` (vLLM states each model's ``max_model_len``) and llama.cpp's
        ``/props`` (its ``n_ctx``), from the default script."""
        script = self.default
        if path.endswith("/models"):
            model: dict[str, Any] = {"id": "fake-model", "object": "model", "owned_by": "fake"}
            if script.profile == "vllm" and script.context_tokens is not None:
                model["max_model_len"] = script.context_tokens
            await self._send_json(writer, 200, {"object": "list", "data": [model]})
        elif path == "/props" and script.profile == "llama-server" and script.context_tokens:
            settings = {"n_ctx": script.context_tokens, "params": {}}
            await self._send_json(writer, 200, {"default_generation_settings": settings})
        else:
            await self._send_json(writer, 404, {"error": {"message": "not found"}})

    async def _overflow(self, writer: asyncio.StreamWriter, script: Script, prompt: int) -> None:
        """A prompt longer than the context, refused as each server refuses it."""
        limit = script.context_tokens
        if script.profile == "llama-cpp-python":  # a 200 and an empty stream
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n"
            )
            await writer.drain()
            return
        if script.profile == "llama-server":
            error = {
                "code": 400,
                "message": f"request ({prompt} tokens) exceeds the available context size "
                f"({limit} tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt,
                "n_ctx": limit,
            }
            payload: dict[str, Any] = {"error": error}
        elif script.profile == "vllm":
            payload = {
                "object": "error",
                "message": f"This model's maximum context length is {limit} tokens. However, "
                f"you requested {prompt} tokens in the messages. Please reduce the length "
                "of the messages.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        else:
            error = {
                "message": f"This model's maximum context length is {limit} tokens. However, "
                f"your messages resulted in {prompt} tokens. Please reduce the length of the "
                "messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            payload = {"error": error}
        await self._send_json(writer, 400, payload, close=True)

    async def _watch_disconnect(self, reader: asyncio.StreamReader, record: Record) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass
        self._hung_up(record)

    @staticmethod
    def _hung_up(record: Record) -> None:
        if not record.disconnected:
            record.disconnected = True
            record.disconnected_at = time.time()

    async def _stream(
        self, writer: asyncio.StreamWriter, record: Record, watcher: asyncio.Task[None]
    ) -> None:
        script = record.script
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        profile = PROFILES[script.profile]
        await self._event(writer, record, profile.first_delta)
        if record.round and script.round_delay:
            await asyncio.wait([watcher], timeout=script.round_delay)
        for index in range(script.reasoning):
            if record.disconnected:
                return
            if script.rate:
                await asyncio.sleep(1 / script.rate)
            await self._event(writer, record, {profile.reasoning_key: f"r{index} "})
        calls = script.calls_for(record.round)
        if calls is not None and (profile.streams_tools or not record.body.get("tools")):
            finish = await self._send_calls(writer, record, calls)
        else:
            finish = await self._send_tokens(writer, record, watcher)
        if finish is _GONE:
            return
        if finish is not _ERROR and not script.bare_done:
            await self._send_ending(writer, record, finish)
        if finish is _ERROR and not profile.done_after_error:
            await self._end_body(writer, record, watcher)
            return
        await self._raw(writer, b"data: [DONE]\n\n")
        await self._end_body(writer, record, watcher)

    async def _end_body(
        self, writer: asyncio.StreamWriter, record: Record, watcher: asyncio.Task[None]
    ) -> None:
        """The last chunk of the body: the connection may serve another request."""
        # Stop watching before the last chunk: the client may send its next request on
        # this connection as soon as it has it, and that must not be read as a hang-up.
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        record.completed = True

    async def _send_ending(self, writer: asyncio.StreamWriter, record: Record, finish: str) -> None:
        """The finish chunk, then the usage chunk when this server sends one."""
        profile = PROFILES[record.script.profile]
        chunks = [self._chunk_body(record, {}, finish)]
        asked = (record.body.get("stream_options") or {}).get("include_usage")
        if record.script.usage and profile.usage_when_asked and asked:
            usage = {
                "prompt_tokens": sum(len(str(m.get("content", ""))) for m in record.messages),
                "completion_tokens": record.tokens_sent,
                "total_tokens": 0,
            }
            chunks.append({**self._chunk_body(record, None, None), "usage": usage})
        if profile.timings:
            chunks[-1]["timings"] = {"prompt_n": 1, "predicted_n": record.tokens_sent}
        for chunk in chunks:
            await self._chunk(writer, chunk)

    async def _send_error_event(self, writer: asyncio.StreamWriter, record: Record) -> str:
        """This server's error event mid-stream; or, where it has none, the body breaks off."""
        error = PROFILES[record.script.profile].error
        if error is None:
            writer.transport.abort()
            return _GONE
        await self._chunk(writer, {"error": error})
        return _ERROR

    async def _refuse_stream_options(self, writer: asyncio.StreamWriter) -> None:
        """A 400 as from a server that does not know the field (Azure, OpenAI: these words)."""
        error = {
            "message": STREAM_OPTIONS_REFUSAL,
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        await self._send_json(writer, 400, {"error": error}, close=True)

    async def _send_tokens(
        self, writer: asyncio.StreamWriter, record: Record, watcher: asyncio.Task[None]
    ) -> str:
        """The text tokens; the finish reason, or ``_GONE`` / ``_ERROR``."""
        script = record.script
        if script.error_joined and script.error_after is not None:
            return await self._send_tokens_and_error(writer, record)
        for index in range(script.tokens):
            if record.disconnected:
                return _GONE
            if index == script.drop_after:
                writer.transport.abort()  # a hard drop, mid-body
                return _GONE
            if index == script.stall_after:
                await watcher  # send nothing more until the client gives up and hangs up
                return _GONE
            if index == script.error_after:
                return await self._send_error_event(writer, record)
            if index == script.garbage_after:  # a broken proxy's line, then the body goes on
                await self._raw(writer, b"data: {not json\n\n")
            if script.rate:
                await asyncio.sleep(1 / script.rate)
            await self._event(writer, record, {"content": script.token(index)})
            record.tokens_sent += 1
        return script.finish_reason

    async def _send_tokens_and_error(self, writer: asyncio.StreamWriter, record: Record) -> str:
        """The first ``error_after`` tokens and an ``error`` event, in one chunk, one write."""
        script = record.script
        assert script.error_after is not None
        events = [
            self._chunk_body(record, {"content": script.token(index)}, None)
            for index in range(script.error_after)
        ]
        error = PROFILES[script.profile].error
        if error is not None:
            events.append({"error": error})
        data = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
        await self._raw(writer, data)
        record.tokens_sent = script.error_after
        if error is None:  # no error event: the body breaks off
            return await self._send_error_event(writer, record)
        return _ERROR

    async def _send_calls(
        self, writer: asyncio.StreamWriter, record: Record, calls: list[dict[str, Any]]
    ) -> str:
        """A tool round: ``round_tokens`` of text, then each call in pieces."""
        script = record.script
        for index in range(script.round_tokens):
            if record.disconnected:
                return _GONE
            if script.rate:
                await asyncio.sleep(1 / script.rate)
            await self._event(writer, record, {"content": f"r{record.round}.{index} "})
            record.tokens_sent += 1
        for index, call in enumerate(calls):
            if record.disconnected:
                return _GONE
            arguments = call["arguments"]
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            first = text[: 3 * (index % 2)]  # the first chunk has none or a bit of the arguments
            if PROFILES[script.profile].whole_tool_calls:
                first = text
            head = {
                "index": index,
                "id": f"call_{uuid.uuid4().hex[:10]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": first},
            }
            await self._event(writer, record, {"tool_calls": [head]})
            for start in range(len(first), len(text), ARGUMENT_PIECE):
                piece = text[start : start + ARGUMENT_PIECE]
                await self._event(
                    writer,
                    record,
                    {"tool_calls": [{"index": index, "function": {"arguments": piece}}]},
                )
            record.tool_calls_sent += 1
        return "tool_calls"

    def _chunk_body(
        self, record: Record, delta: dict[str, Any] | None, finish: str | None
    ) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {
            "id": record.id,
            "object": "chat.completion.chunk",
            "created": int(record.started_at),
            "model": record.model,
            "choices": choices,
        }

    async def _event(self, writer: asyncio.StreamWriter, record: Record, delta: dict) -> None:
        await self._chunk(writer, self._chunk_body(record, delta, None))

    async def _chunk(self, writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
        await self._raw(writer, b"data: " + json.dumps(payload).encode() + b"\n\n")

    @staticmethod
    async def _raw(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _send_whole(self, writer: asyncio.StreamWriter, record: Record) -> None:
        text = record.script.unstreamed_text
        if text is None:
            text = record.script.expected_text()
        record.tokens_sent = record.script.tokens
        payload = {
            "id": record.id,
            "object": "chat.completion",
            "created": int(record.started_at),
            "model": record.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": record.script.finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": record.tokens_sent},
        }
        await self._send_json(writer, 200, payload)
        record.completed = True

    async def _send_error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        payload = {"error": {"message": message, "type": "server_error", "secret": "UPSTREAM-BODY"}}
        await self._send_json(writer, status, payload, close=True)

    @staticmethod
    async def _send_json(
        writer: asyncio.StreamWriter, status: int, payload: dict, close: bool = False
    ) -> None:
        data = json.dumps(payload).encode()
        connection = "connection: close\r\n" if close else ""
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{connection}\r\n".encode()
            + data
        )
        await writer.drain()


def directive(**script: Any) -> str:
    """The text that makes the fake follow ``script`` for one request."""
    return f"{_DIRECTIVE}{json.dumps(script)}]]"


__all__ = ["FakeOpenAI", "Record", "Script", "asdict", "directive"]
