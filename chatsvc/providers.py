"""LLM providers behind one small port: ``stream(request)`` yields :class:`Delta` values.

``OpenAIProvider`` talks to any OpenAI-compatible server through the official
SDK: its client, base URL, auth, timeouts and retries. It reads the streamed
body itself and decodes the server-sent events with msgspec, because building
a pydantic ``ChatCompletionChunk`` per token costs most of a relay's CPU
(docs/architecture.md, providers). One network read becomes one ``Delta``, so
a burst of chunks is relayed as one event rather than hundreds.

``EchoProvider`` is the built-in stand-in used when no upstream is configured:
it repeats the user's words. It is not an LLM, and the start banner says so.
Its ``/tree ...`` commands stand in for a model's tool calls (see the class).

Tools: a request may offer function ``tools``; the model's calls come back
whole on the delta that ends its answer (``Delta.tool_calls``, finish reason
``tool_calls``), and the next request carries the assistant turn with the
calls and one ``tool`` turn per result.

SDK and HTTP exceptions never leave this module: they become ``LLMUnavailable``
(before the first token), ``LLMError`` (mid-stream) or ``GenerationTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import anyio
import httpx2
import msgspec
import openai
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from chatsvc.context import ANY_MODEL
from chatsvc.errors import (
    ContextOverflow,
    EmptyReply,
    GenerationTimeout,
    LLMError,
    LLMUnavailable,
)
from chatsvc.settings import Settings

log = logging.getLogger("chatsvc.providers")

CLOSE_SECONDS = 2.0
#: How long the start may wait for the model server to say its context length.
PROBE_SECONDS = 3.0


class ToolRequest(msgspec.Struct, frozen=True):
    """A function call the model asked for: ``arguments`` is JSON text, as the model wrote it."""

    id: str
    name: str
    arguments: str


class ChatTurn(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the conversation sent upstream.

    An assistant turn may carry the ``tool_calls`` it made; each gets its answer
    in a ``tool`` turn naming it by ``tool_call_id``.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolRequest, ...] = ()
    tool_call_id: str | None = None


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: list[ChatTurn]
    temperature: float | None = None
    max_tokens: int | None = None
    #: Function tools offered to the model (OpenAI's ``tools`` shape); none: no tools.
    tools: list[dict[str, Any]] | None = None


class TokenUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Delta(msgspec.Struct, frozen=True, kw_only=True):
    """What one read from the upstream brought."""

    text: str = ""
    reasoning: str = ""
    usage: TokenUsage | None = None
    finish_reason: str | None = None
    #: Complete tool calls, on the delta that ends the model's answer (never fragments).
    tool_calls: tuple[ToolRequest, ...] = ()


class StatedContext(NamedTuple):
    """A model's context length as its server states it, and where it said so."""

    tokens: int
    source: str


class LLMProvider(Protocol):
    name: str

    @property
    def circuit_state(self) -> CircuitState: ...

    async def stated_contexts(self) -> dict[str, StatedContext]:
        """The context lengths the server states, by model id (``ANY_MODEL``: all)."""
        ...

    async def aclose(self) -> None:
        """Close the connections to the server (at the app's shutdown)."""
        ...

    def stream(
        self, request: CompletionRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[Delta]]:
        """Open the upstream stream; leaving the context closes it, also on cancellation."""
        ...


# --- OpenAI-compatible ----------------------------------------------------------------


class _ChunkFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None  # a few servers send an object, whole


class _ChunkToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _ChunkFunction | None = None


class _ChunkDelta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None  # vLLM, DeepSeek, llama.cpp
    reasoning: str | None = None  # Ollama, OpenRouter
    tool_calls: list[_ChunkToolCall] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _ChunkDelta | None = None
    finish_reason: str | None = None


class _ChunkError(msgspec.Struct):
    message: str | None = None
    type: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: TokenUsage | None = None
    error: _ChunkError | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


@dataclass
class _PartialCall:
    index: int
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _ToolCalls:
    """Streamed tool calls put together: the first fragment of a call brings its ``index``,
    ``id`` and name, the next ones (same ``index``) pieces of its ``arguments`` text."""

    def __init__(self) -> None:
        self._calls: list[_PartialCall] = []

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragment: _ChunkToolCall) -> None:
        call = self._call_for(fragment)
        call.id = fragment.id or call.id
        if (function := fragment.function) is not None:
            if name := function.name:  # sent once, in pieces, or again whole on every chunk
                call.name = name if name.startswith(call.name) else call.name + name
            if isinstance(function.arguments, dict):
                call.arguments.append(msgspec.json.encode(function.arguments).decode())
            elif function.arguments:
                call.arguments.append(function.arguments)

    def _call_for(self, fragment: _ChunkToolCall) -> _PartialCall:
        """The call a fragment continues; a new one for a new index, or a new id at an index
        (a few servers number every call 0, or none: then a fragment continues the last)."""
        if fragment.index is None:
            current = self._calls[-1] if self._calls else None
        else:
            current = next((c for c in reversed(self._calls) if c.index == fragment.index), None)
        if current is None or (fragment.id and current.id and fragment.id != current.id):
            index = len(self._calls) if fragment.index is None else fragment.index
            current = _PartialCall(index)
            self._calls.append(current)
        return current

    def take(self) -> tuple[ToolRequest, ...]:
        calls = tuple(
            ToolRequest(
                id=call.id or f"call_{n}", name=call.name, arguments="".join(call.arguments)
            )
            for n, call in enumerate(self._calls)
        )
        self._calls.clear()
        return calls


class _Read(NamedTuple):
    """What the events of one read come to: a delta, whether ``[DONE]`` came, and the
    error that ended the stream (after the delta: tokens read with it are kept)."""

    delta: Delta | None
    done: bool = False
    error: LLMError | None = None


def _parse_events(lines: list[bytes], tools: _ToolCalls | None = None) -> _Read:
    """Fold the ``data:`` lines of one read into one delta, up to ``[DONE]`` or an error.

    Tool call fragments gather in ``tools``; the calls come out whole on the delta that
    ends the answer (its finish reason, or ``[DONE]``).
    """
    text: list[str] = []
    reasoning: list[str] = []
    usage = finish_reason = None
    done = False
    error: LLMError | None = None
    tools = tools if tools is not None else _ToolCalls()
    for line in lines:
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, `event:` lines
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            chunk = _decode_chunk(data)
        except msgspec.DecodeError as exc:
            error = LLMError("the model server sent a malformed event")
            error.__cause__ = exc
            break
        if chunk.error is not None:
            log.warning("upstream error event: %s", chunk.error.message)
            error = LLMError("the model server reported an error while streaming")
            break
        for choice in chunk.choices:
            if choice.delta is not None:
                if choice.delta.content:
                    text.append(choice.delta.content)
                if thought := choice.delta.reasoning_content or choice.delta.reasoning:
                    reasoning.append(thought)
                for fragment in choice.delta.tool_calls or ():
                    tools.add(fragment)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    calls = tools.take() if tools and error is None and (finish_reason or done) else ()
    if not (text or reasoning or usage or finish_reason or calls):
        return _Read(None, done, error)
    delta = Delta(
        text="".join(text),
        reasoning="".join(reasoning),
        usage=usage,
        finish_reason=finish_reason,
        tool_calls=calls,
    )
    return _Read(delta, done, error)


def _openai_messages(turns: list[ChatTurn]) -> list[dict[str, Any]]:
    """The turns in OpenAI's message shape, as plain values (sent as they are)."""
    messages: list[dict[str, Any]] = []
    for turn in turns:
        if turn.role == "tool":
            message = {"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content}
        elif turn.tool_calls:
            message = {
                "role": "assistant",
                "content": turn.content or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in turn.tool_calls
                ],
            }
        else:
            message = {"role": turn.role, "content": turn.content}
        messages.append(message)
    return messages


CircuitState = Literal["closed", "open", "half-open"]
_CIRCUIT = "llm"
_STATES: dict[str, CircuitState] = {
    "closed": "closed",
    "opened": "open",
    "half-opened": "half-open",
}


#: How servers word a prompt longer than the model's context (OpenAI, vLLM, llama.cpp,
#: LM Studio, TGI...), for those that send no code saying so.
_OVERFLOW_WORDS = re.compile(
    r"context[ _](length|window|size)|maximum context|too many tokens|prompt is too long",
    re.IGNORECASE,
)
#: Where the message names the limit: "maximum context length is 4096 tokens" (OpenAI,
#: vLLM), "exceeds the available context size (4096 tokens)" (llama.cpp).
_STATED_LIMIT = re.compile(
    r"maximum context length is (\d+)|context size \((\d+) tokens\)", re.IGNORECASE
)


def _context_overflow(exc: openai.APIStatusError) -> ContextOverflow | None:
    """The overflow a refusal stands for, with the context length if the server gave it."""
    if exc.status_code not in (400, 413, 422):
        return None
    body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
    message = str(body.get("message") or exc.message)
    recognised = (
        exc.code == "context_length_exceeded"
        or body.get("type") == "exceed_context_size_error"
        or _OVERFLOW_WORDS.search(message) is not None
    )
    if not recognised:
        return None
    stated = body.get("n_ctx")
    if not isinstance(stated, int) and (match := _STATED_LIMIT.search(message)):
        stated = int(match.group(1) or match.group(2))
    return ContextOverflow(
        "the conversation is longer than the model's context",
        context_tokens=stated if isinstance(stated, int) and stated > 0 else None,
    )


def _not_an_outage(exc: BaseException) -> bool:
    """A refusal such as 400 or 401 means the server is up: it does not trip the breaker."""
    if not isinstance(exc, openai.APIStatusError):
        return False
    return exc.status_code < 500 and exc.status_code != 429


def _rejects_stream_options(exc: openai.APIStatusError) -> bool:
    """A server that does not know ``stream_options`` refuses it by name ("Unrecognized request
    argument supplied: stream_options" from Azure; FastAPI servers answer 422)."""
    return exc.status_code in (400, 422) and "stream_options" in f"{exc.message} {exc.body}"


def _connect_failure(exc: BaseException) -> OSError | None:
    """The OS error that kept the connection from opening, when that is what happened.

    The SDK's aiohttp transport maps every aiohttp connection error to httpx's
    ``ConnectTimeout`` (its table tries ``ClientConnectionError`` before
    ``ClientConnectorError``), so a refused connection arrives as ``APITimeoutError``;
    the ``OSError`` is down the ``__cause__`` chain. A real timeout has only
    ``TimeoutError`` there (an ``OSError`` too, but no failure to connect).
    """
    cause = exc.__cause__
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def _why(failure: OSError) -> str:
    """What the OS said, in its words: "Connection refused", "Name or service not known"."""
    if failure.errno is not None and failure.errno > 0:
        return os.strerror(failure.errno)
    return failure.strerror or type(failure).__name__


def _unreachable(exc: openai.APIConnectionError) -> LLMUnavailable:
    """The error for a request that got no answer; a failed connect is logged (issue 13).

    Logged here, once per request: the SDK's retries happen below this, silently.
    """
    failure = _connect_failure(exc)
    if failure is not None:
        url = exc.request.url
        log.warning(
            "could not connect to the model server at %s:%s: %s", url.host, url.port, _why(failure)
        )
        return LLMUnavailable("could not connect to the model server")
    if isinstance(exc, openai.APITimeoutError):
        return LLMUnavailable("the model server did not answer in time")
    log.warning("upstream unreachable: %s", exc)
    return LLMUnavailable("the model server is unreachable")


class OpenAIProvider:
    """Any OpenAI-compatible ``/chat/completions`` endpoint, streamed.

    A circuit breaker (purgatory) guards the opening of each stream: after
    ``LLM_BREAKER_THRESHOLD`` outages in a row (unreachable, timeout, 429, 5xx,
    each after the SDK's own retries) it opens, and requests fail at once with
    ``llm_unavailable`` for ``LLM_BREAKER_COOLDOWN`` seconds; then one trial
    request goes through, and its outcome closes or reopens the circuit.
    """

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.llm_breaker_threshold,
            default_ttl=settings.llm_breaker_cooldown,
            exclude=[
                asyncio.CancelledError,  # an abort while connecting is no outage (asyncio: uvicorn)
                (openai.APIStatusError, _not_an_outage),
            ],
        )
        self._circuit_state: CircuitState = "closed"
        #: Ask for usage in the stream; off once the server refused ``stream_options``.
        self._ask_usage = True
        self._cooldown = settings.llm_breaker_cooldown
        self._opened_at: float | None = None  # purgatory's clock: `time.time()`
        self._trial_running = False
        # The read timeout is the idle timeout between two chunks of the stream.
        timeout = openai.Timeout(
            settings.llm_stream_idle_timeout, connect=settings.llm_connect_timeout
        )
        self._client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            max_retries=settings.llm_max_retries,
            timeout=timeout,
            # The SDK's aiohttp transport: its C HTTP parser reads a stream for a fraction of
            # the CPU the default pure-Python one costs per chunk (docs/performance.md).
            http_client=openai.DefaultAioHttpClient(timeout=timeout),
        )

    async def aclose(self) -> None:
        await self._client.close()

    @property
    def circuit_state(self) -> CircuitState:
        """Purgatory half-opens an open circuit only when the next request comes; once
        the cooldown is over, that request will be the trial: say so already (issue 12)."""
        opened_at = self._opened_at
        if self._circuit_state != "open" or opened_at is None:
            return self._circuit_state
        return "half-open" if time.time() > opened_at + self._cooldown else "open"

    async def _open_guarded(self, opening: Any) -> Any:
        """Open the stream through the breaker; a half-open circuit lets one trial through."""
        breaker = await self._breakers.get_breaker(_CIRCUIT)
        if breaker.context.state == "half-opened" and self._trial_running:
            raise LLMUnavailable("the model server is unavailable (circuit open)")
        trial = breaker.context.state != "closed"
        self._trial_running = self._trial_running or trial
        try:
            async with breaker:
                return await opening.__aenter__()
        except OpenedState as exc:
            raise LLMUnavailable("the model server is unavailable (circuit open)") from exc
        finally:
            if trial:
                self._trial_running = False
            self._opened_at = breaker.context.opened_at
            state = _STATES.get(breaker.context.state, "closed")
            if state != self._circuit_state:
                log.warning("LLM circuit breaker: %s -> %s", self._circuit_state, state)
                self._circuit_state = state

    def _opening(self, model: str, body: dict[str, Any], ask_usage: bool) -> Any:
        """The SDK's streamed request, not sent yet."""
        return self._client.chat.completions.with_streaming_response.create(
            model=model,
            messages=[],
            stream=True,
            stream_options={"include_usage": True} if ask_usage else openai.omit,
            extra_body=body,
        )

    async def _open(self, model: str, body: dict[str, Any]) -> tuple[Any, Any]:
        """Open the stream: the opening and its response.

        We ask for usage in the stream (``stream_options``). A server that ignores the
        field streams without usage; one that refuses it by name gets the request again
        without it, and never again the field for the rest of the process (issue 13).
        """
        ask_usage = self._ask_usage
        opening = self._opening(model, body, ask_usage)
        try:
            return opening, await self._open_guarded(opening)
        except openai.APIStatusError as exc:
            if not (ask_usage and _rejects_stream_options(exc)):
                raise
        if self._ask_usage:
            self._ask_usage = False
            log.info(
                "the model server refuses stream_options: asking without it from now on "
                "(usage is only stored if the server sends it anyway)"
            )
        opening = self._opening(model, body, ask_usage=False)
        return opening, await self._open_guarded(opening)

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[Delta]]:
        body: dict[str, Any] = {"messages": _openai_messages(request.messages)}
        if request.tools:
            body["tools"] = request.tools
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        # The messages and tools go in `extra_body`, which the SDK sends as given: through
        # `messages=` it would first walk them against its TypedDicts, about 5 ms of CPU per
        # reply with a short history, more with a long one (docs/performance.md).
        try:
            opening, response = await self._open(request.model, body)
        except openai.APIConnectionError as exc:  # and APITimeoutError
            raise _unreachable(exc) from exc
        except openai.APIStatusError as exc:
            if (overflow := _context_overflow(exc)) is not None:
                log.info("upstream: the prompt is longer than the model's context: %s", exc.message)
                raise overflow from exc
            log.warning("upstream refused with HTTP %s: %s", exc.status_code, exc.message)
            status = exc.status_code
            if status == 429 or status >= 500:
                message = f"the model server is unavailable (HTTP {status})"
                raise LLMUnavailable(message) from exc
            raise LLMError(f"the model server refused the request (HTTP {status})") from exc
        try:
            yield self._deltas(response.http_response)
        finally:
            # Closing the response closes the HTTP connection: the server stops generating.
            with anyio.move_on_after(CLOSE_SECONDS, shield=True):
                await opening.__aexit__(None, None, None)

    async def stated_contexts(self) -> dict[str, StatedContext]:
        """Ask the server its context lengths: vLLM lists ``max_model_len`` with each model,
        llama.cpp's server gives ``n_ctx`` in its ``/props``; the others do not say."""
        client = self._client.with_options(timeout=PROBE_SECONDS, max_retries=0)
        stated: dict[str, StatedContext] = {}
        try:
            page = await client.models.list()
        except openai.OpenAIError as exc:
            log.info("the model server did not list its models (%s)", type(exc).__name__)
            return stated
        for model in page.data:
            length = (model.model_extra or {}).get("max_model_len")
            if isinstance(length, int) and length > 0:
                stated[model.id] = StatedContext(length, "max_model_len in /v1/models")
        if not stated and (length := await self._llama_cpp_context(client)) is not None:
            stated[ANY_MODEL] = StatedContext(length, "n_ctx in the server's /props")
        return stated

    @staticmethod
    async def _llama_cpp_context(client: openai.AsyncOpenAI) -> int | None:
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        try:
            props = await client.get(f"{root}/props", cast_to=object)
        except openai.OpenAIError:
            return None  # not llama.cpp's server
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        length = settings.get("n_ctx") if isinstance(settings, dict) else None
        return length if isinstance(length, int) and length > 0 else None

    async def _deltas(self, response: httpx2.Response) -> AsyncIterator[Delta]:
        pending = b""
        finished = sent = False
        tools = _ToolCalls()
        try:
            async for data in response.aiter_bytes():
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                delta, done, error = _parse_events(lines, tools)
                if delta is not None:
                    finished = finished or delta.finish_reason is not None or bool(delta.tool_calls)
                    sent = True
                    yield delta
                if error is not None:  # after the tokens that came with it (issue 12)
                    raise error
                if done:
                    break
        except httpx2.TimeoutException as exc:
            raise GenerationTimeout("the model server stopped sending") from exc
        except httpx2.TransportError as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            raise LLMError("the connection to the model server broke") from exc
        if not (finished or sent):
            # llama-cpp-python answers a prompt longer than its context this way (issue 13).
            log.warning("upstream stream ended empty")
            raise EmptyReply("the model server sent an empty reply")
        if not finished:
            # No finish reason: the body ended, or a bare `[DONE]` came (llama-cpp-python ends
            # a reply that way when another request interrupts it). Not a finished answer.
            log.warning("upstream stream ended without a finish reason")
            raise LLMError("the model server ended the reply early")


# --- echo -------------------------------------------------------------------------------

_WORDS = re.compile(r"\S+\s*|\s+")

#: The echo provider's stand-ins for a model using the tree tools (docs/protocol.md section 5).
TREE_COMMANDS = (
    "/tree add <parent_id> <text>",
    "/tree rename <id> <text>",
    "/tree move <id> <parent_id> [index]",
    "/tree remove <id>",
)
_VERBS = {
    "tree_add_node": "added",
    "tree_rename_node": "renamed",
    "tree_move_node": "moved",
    "tree_remove_node": "removed",
}


def echo_reply(content: str) -> list[str]:
    """The echo provider's reply to ``content``, as the tokens it streams."""
    return _WORDS.findall(f"Echo: {content}")


def tree_command(content: str) -> tuple[str, dict[str, Any]] | None:
    """The tool call (name, arguments) a ``/tree ...`` message stands for.

    ``None`` when the message is no ``/tree`` command; ``ValueError`` when it is
    one, misspelled.
    """
    words = content.split()
    if not words or words[0] != "/tree":
        return None
    text = content.split(maxsplit=3)[3].strip() if len(words) > 3 else ""  # spaces kept
    match words[1:]:
        case ["add", parent_id, _, *_]:
            return "tree_add_node", {"parent_id": parent_id, "value": text}
        case ["rename", node_id, _, *_]:
            return "tree_rename_node", {"id": node_id, "value": text}
        case ["move", node_id, parent_id]:
            return "tree_move_node", {"id": node_id, "parent_id": parent_id}
        case ["move", node_id, parent_id, index] if index.isdigit():
            return "tree_move_node", {"id": node_id, "parent_id": parent_id, "index": int(index)}
        case ["remove", node_id]:
            return "tree_remove_node", {"id": node_id}
    raise ValueError("usage: " + " | ".join(TREE_COMMANDS))


def _tool_outcome(request: CompletionRequest) -> str:
    """What the echo provider says once the result of its tool call came back."""
    result_turn = request.messages[-1]
    asked = next(
        (
            call
            for turn in reversed(request.messages)
            for call in turn.tool_calls
            if call.id == result_turn.tool_call_id
        ),
        None,
    )
    verb = _VERBS.get(asked.name, "changed") if asked is not None else "changed"
    try:
        result = msgspec.json.decode(result_turn.content)
    except msgspec.DecodeError:
        result = {}
    if isinstance(result, dict) and result.get("ok"):
        return f"Done: {verb} node {result.get('id')} (version {result.get('version')})."
    error = result.get("error") if isinstance(result, dict) else None
    return f"Not done: the node could not be {verb}: {error or 'no result'}."


class EchoProvider:
    """Repeats the user's last message word by word. Not an LLM.

    When the tree tools are offered, a message that is one of ``TREE_COMMANDS``
    (``/tree add root hello``) makes it ask for that one tool call instead, and
    once the call's result comes back it says in a sentence what happened
    ("Done: added node n1a2b3c4 (version 1)." or why not). A deterministic way to
    exercise the tool loop with no model at all.
    """

    name = "echo"
    circuit_state: CircuitState = "closed"

    def __init__(self, token_delay: float) -> None:
        self.token_delay = token_delay

    async def aclose(self) -> None:
        return None

    async def stated_contexts(self) -> dict[str, StatedContext]:
        return {}

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[Delta]]:
        yield self._deltas(request)

    async def _deltas(self, request: CompletionRequest) -> AsyncIterator[Delta]:
        prompt = sum(len(_WORDS.findall(turn.content)) for turn in request.messages)
        call = _echo_tool_call(request)
        if call is not None:
            await anyio.sleep(self.token_delay)
            usage = TokenUsage(prompt_tokens=prompt, completion_tokens=1)
            yield Delta(tool_calls=(call,), usage=usage, finish_reason="tool_calls")
            return
        tokens = _echo_answer(request)
        for token in tokens:
            await anyio.sleep(self.token_delay)
            yield Delta(text=token)
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=len(tokens))
        yield Delta(usage=usage, finish_reason="stop")


def _echo_tool_call(request: CompletionRequest) -> ToolRequest | None:
    """The call a ``/tree`` command as the last message stands for, if that tool is offered."""
    last = request.messages[-1]
    offered = {tool["function"]["name"] for tool in request.tools or ()}
    if last.role != "user" or not offered:
        return None
    try:
        command = tree_command(last.content)
    except ValueError:
        return None
    if command is None or command[0] not in offered:
        return None
    name, arguments = command
    arguments_json = msgspec.json.encode(arguments).decode()
    return ToolRequest(id=f"call_{len(request.messages)}", name=name, arguments=arguments_json)


def _echo_answer(request: CompletionRequest) -> list[str]:
    """The words of the echo provider's text answer."""
    last = request.messages[-1]
    if last.role == "tool":
        return _WORDS.findall(_tool_outcome(request))
    if request.tools:
        try:
            tree_command(last.content)
        except ValueError as exc:  # a misspelled command: say how to spell it
            return _WORDS.findall(str(exc))
    return echo_reply(last.content)


def create_provider(settings: Settings) -> LLMProvider:
    if settings.llm_provider == "openai":
        return OpenAIProvider(settings)
    return EchoProvider(settings.echo_token_delay)
