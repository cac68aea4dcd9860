"""LLM providers behind one small port: ``stream(request)`` yields :class:`Delta` values.

``OpenAIProvider`` talks to any OpenAI-compatible server through the official
SDK: its client, base URL, auth, timeouts and retries. It reads the streamed
body itself and decodes the server-sent events with msgspec, because building
a pydantic ``ChatCompletionChunk`` per token costs most of a relay's CPU
(shared/STACK-NOTES.md section 12). One network read becomes one ``Delta``, so
a burst of chunks is relayed as one event rather than hundreds.

``EchoProvider`` is the built-in stand-in used when no upstream is configured:
it repeats the user's words. It is not an LLM, and the start banner says so.

SDK and HTTP exceptions never leave this module: they become ``LLMUnavailable``
(before the first token), ``LLMError`` (mid-stream) or ``GenerationTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Protocol

import anyio
import httpx2
import msgspec
import openai
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from chatsvc.errors import GenerationTimeout, LLMError, LLMUnavailable
from chatsvc.settings import Settings

log = logging.getLogger("chatsvc.providers")

CLOSE_SECONDS = 2.0


class ChatTurn(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: list[ChatTurn]
    temperature: float | None = None
    max_tokens: int | None = None


class TokenUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Delta(msgspec.Struct, frozen=True, kw_only=True):
    """What one read from the upstream brought."""

    text: str = ""
    reasoning: str = ""
    usage: TokenUsage | None = None
    finish_reason: str | None = None


class LLMProvider(Protocol):
    name: str

    @property
    def circuit_state(self) -> CircuitState: ...

    def stream(
        self, request: CompletionRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[Delta]]:
        """Open the upstream stream; leaving the context closes it, also on cancellation."""
        ...


# --- OpenAI-compatible ----------------------------------------------------------------


class _ChunkDelta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None  # vLLM, DeepSeek, llama.cpp
    reasoning: str | None = None  # Ollama, OpenRouter


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


def _parse_events(lines: list[bytes]) -> tuple[Delta | None, bool]:
    """Fold the ``data:`` lines of one read into one delta; ``True`` once ``[DONE]`` came."""
    text: list[str] = []
    reasoning: list[str] = []
    usage = finish_reason = None
    done = False
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
            raise LLMError("the model server sent a malformed event") from exc
        if chunk.error is not None:
            log.warning("upstream error event: %s", chunk.error.message)
            raise LLMError("the model server reported an error while streaming")
        for choice in chunk.choices:
            if choice.delta is not None:
                if choice.delta.content:
                    text.append(choice.delta.content)
                if thought := choice.delta.reasoning_content or choice.delta.reasoning:
                    reasoning.append(thought)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    if not (text or reasoning or usage or finish_reason):
        return None, done
    delta = Delta(
        text="".join(text), reasoning="".join(reasoning), usage=usage, finish_reason=finish_reason
    )
    return delta, done


CircuitState = Literal["closed", "open", "half-open"]
_CIRCUIT = "llm"
_STATES: dict[str, CircuitState] = {
    "closed": "closed",
    "opened": "open",
    "half-opened": "half-open",
}


def _not_an_outage(exc: BaseException) -> bool:
    """A refusal such as 400 or 401 means the server is up: it does not trip the breaker."""
    if not isinstance(exc, openai.APIStatusError):
        return False
    return exc.status_code < 500 and exc.status_code != 429


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
        return self._circuit_state

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
            state = _STATES.get(breaker.context.state, "closed")
            if state != self._circuit_state:
                log.warning("LLM circuit breaker: %s -> %s", self._circuit_state, state)
                self._circuit_state = state

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[Delta]]:
        body: dict[str, Any] = {"messages": msgspec.to_builtins(request.messages)}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        # The messages go in `extra_body`, which the SDK sends as given: through `messages=`
        # it would first walk them against its TypedDicts, about 5 ms of CPU per reply with
        # a short history, more with a long one (docs/performance.md).
        opening = self._client.chat.completions.with_streaming_response.create(
            model=request.model,
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
            extra_body=body,
        )
        try:
            response = await self._open_guarded(opening)
        except openai.APITimeoutError as exc:
            raise LLMUnavailable("the model server did not answer in time") from exc
        except openai.APIConnectionError as exc:
            log.warning("upstream unreachable: %s", exc)
            raise LLMUnavailable("the model server is unreachable") from exc
        except openai.APIStatusError as exc:
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

    async def _deltas(self, response: httpx2.Response) -> AsyncIterator[Delta]:
        pending = b""
        finished = False
        try:
            async for data in response.aiter_bytes():
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                delta, done = _parse_events(lines)
                if delta is not None:
                    finished = finished or delta.finish_reason is not None
                    yield delta
                if done:
                    return
        except httpx2.TimeoutException as exc:
            raise GenerationTimeout("the model server stopped sending") from exc
        except httpx2.TransportError as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            raise LLMError("the connection to the model server broke") from exc
        if not finished:  # neither `[DONE]` nor a finish reason: the stream was cut
            raise LLMError("the model server ended the stream early")


# --- echo -------------------------------------------------------------------------------

_WORDS = re.compile(r"\S+\s*|\s+")


def echo_reply(content: str) -> list[str]:
    """The echo provider's reply to ``content``, as the tokens it streams."""
    return _WORDS.findall(f"Echo: {content}")


class EchoProvider:
    """Repeats the user's last message word by word. Not an LLM."""

    name = "echo"
    circuit_state: CircuitState = "closed"

    def __init__(self, token_delay: float) -> None:
        self.token_delay = token_delay

    async def aclose(self) -> None:
        return None

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[Delta]]:
        yield self._deltas(request)

    async def _deltas(self, request: CompletionRequest) -> AsyncIterator[Delta]:
        prompt = sum(len(_WORDS.findall(turn.content)) for turn in request.messages)
        tokens = echo_reply(request.messages[-1].content)
        for token in tokens:
            await anyio.sleep(self.token_delay)
            yield Delta(text=token)
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=len(tokens))
        yield Delta(usage=usage, finish_reason="stop")


def create_provider(settings: Settings) -> OpenAIProvider | EchoProvider:
    if settings.llm_provider == "openai":
        return OpenAIProvider(settings)
    return EchoProvider(settings.echo_token_delay)
