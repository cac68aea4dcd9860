"""``OpenAIProvider``: any OpenAI-compatible server, through the official SDK.

The SDK brings the client, base URL, auth, timeouts and retries; the streamed
body is read here and decoded by :mod:`chatsvc.providers.chunks`. SDK and HTTP
exceptions never leave: they become ``LLMUnavailable`` (before the first token),
``LLMError`` (mid-stream) or ``GenerationTimeout`` (:mod:`chatsvc.providers.failures`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import anyio
import httpx2
import msgspec
import openai
from openai.types.chat import ChatCompletionChunk
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from chatsvc import titles
from chatsvc.context import ANY_MODEL
from chatsvc.errors import GenerationTimeout, LLMError, LLMUnavailable
from chatsvc.providers.chunks import StreamDecoder
from chatsvc.providers.failures import (
    not_an_outage,
    refused,
    rejects_stream_options,
    unreachable,
)
from chatsvc.providers.port import ChatTurn, CircuitState, CompletionRequest, Delta, StatedContext
from chatsvc.settings import Settings

log = logging.getLogger("chatsvc.providers")

CLOSE_SECONDS = 2.0
#: Tokens the model may spend naming a chat: a title is a few words.
TITLE_MAX_TOKENS = 32
#: How long the start may wait for the model server to say its context length.
PROBE_SECONDS = 3.0


class _GenerationSettings(msgspec.Struct):
    n_ctx: int = 0


class _Props(msgspec.Struct):
    """What llama.cpp's server says of itself in ``/props``: the context length, here."""

    default_generation_settings: _GenerationSettings = msgspec.field(
        default_factory=_GenerationSettings
    )


_CIRCUIT = "llm"
_STATES: dict[str, CircuitState] = {
    "closed": "closed",
    "opened": "open",
    "half-opened": "half-open",
}

#: The streamed request, not sent yet: entering it sends the request.
_Opening = AbstractAsyncContextManager[httpx2.Response]


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
                (openai.APIStatusError, not_an_outage),
            ],
        )
        self._circuit_state: CircuitState = "closed"
        #: Ask for usage in the stream; off once the server refused ``stream_options``.
        self._ask_usage = True
        self._cooldown = settings.llm_breaker_cooldown
        self._title_timeout = settings.llm_title_timeout
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

    async def _open_guarded(
        self, opening: Callable[[], _Opening], stack: AsyncExitStack
    ) -> httpx2.Response:
        """Open the stream through the breaker; a half-open circuit lets one trial through.

        The opened response joins ``stack``: closing the stack closes it. ``opening`` makes
        the request only once the breaker lets it through: the SDK's request coroutine,
        made and never awaited, would be a "never awaited" warning when it is collected.
        """
        breaker = await self._breakers.get_breaker(_CIRCUIT)
        if breaker.context.state == "half-opened" and self._trial_running:
            raise LLMUnavailable("the model server is unavailable (circuit open)")
        trial = breaker.context.state != "closed"
        self._trial_running = self._trial_running or trial
        try:
            async with breaker:
                return await stack.enter_async_context(opening())
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

    @asynccontextmanager
    async def _opening(
        self, model: str, body: dict[str, Any], ask_usage: bool
    ) -> AsyncGenerator[httpx2.Response]:
        """The streamed request, sent on entering; its response, closed on leaving.

        It goes through the SDK's client (base URL, auth, retries, timeouts, status
        errors) but not through ``chat.completions.create``, whose handling of its
        parameters cost about 0.3 ms of CPU a reply (docs/performance.md, "The socket
        writer and the upstream request"): the body is ours, plain values, encoded by
        msgspec and sent as it is. The SDK's ``AsyncStream`` is never iterated:
        :mod:`chatsvc.providers.chunks` decodes the body.
        """
        payload = {"model": model, **body, "stream": True}
        if ask_usage:
            payload["stream_options"] = {"include_usage": True}
        stream = await self._client.post(
            "/chat/completions",
            cast_to=ChatCompletionChunk,
            content=msgspec.json.encode(payload),
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
        try:
            yield stream.response
        finally:
            await stream.close()

    async def _open(
        self, model: str, body: dict[str, Any], stack: AsyncExitStack
    ) -> httpx2.Response:
        """Open the stream; its response joins ``stack``.

        We ask for usage in the stream (``stream_options``). A server that ignores the
        field streams without usage; one that refuses it by name gets the request again
        without it, and never again the field for the rest of the process (issue 13).
        """
        ask_usage = self._ask_usage
        try:
            return await self._open_guarded(partial(self._opening, model, body, ask_usage), stack)
        except openai.APIStatusError as exc:
            if not (ask_usage and rejects_stream_options(exc)):
                raise
        if self._ask_usage:
            self._ask_usage = False
            log.info(
                "the model server refuses stream_options: asking without it from now on "
                "(usage is only stored if the server sends it anyway)"
            )
        return await self._open_guarded(partial(self._opening, model, body, False), stack)

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncGenerator[AsyncIterator[Delta]]:
        body: dict[str, Any] = {"messages": _openai_messages(request.messages)}
        if request.tools:
            body["tools"] = request.tools
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        stack = AsyncExitStack()
        try:
            try:
                response = await self._open(request.model, body, stack)
            except openai.APIConnectionError as exc:  # and APITimeoutError
                raise unreachable(exc) from exc
            except openai.APIStatusError as exc:
                raise refused(exc) from exc
            yield self._deltas(response)
        finally:
            # Closing the response closes the HTTP connection: the server stops generating.
            # Shielded (an abort is what usually brings us here) and bounded.
            with anyio.move_on_after(CLOSE_SECONDS, shield=True):
                await stack.aclose()

    async def title(self, model: str, question: str, answer: str) -> str:
        """One non-streamed request, ``TITLE_MAX_TOKENS`` at most, ``LLM_TITLE_TIMEOUT``
        for all of it and no retry. It skips the circuit breaker: a title is worth no
        request while the circuit is open, and its failures do not open it."""
        if self.circuit_state != "closed":
            raise LLMUnavailable("the model server is unavailable (circuit open)")
        client = self._client.with_options(timeout=self._title_timeout, max_retries=0)
        messages = [
            {"role": "system", "content": titles.INSTRUCTION},
            {"role": "user", "content": titles.prompt(question, answer)},
        ]
        try:
            completion = await client.chat.completions.create(
                model=model,
                messages=[],
                max_tokens=TITLE_MAX_TOKENS,
                extra_body={"messages": messages},  # sent as given, not walked against TypedDicts
            )
        except openai.APIConnectionError as exc:  # and APITimeoutError
            raise unreachable(exc) from exc
        except openai.APIStatusError as exc:
            raise refused(exc) from exc
        except openai.OpenAIError as exc:  # an answer the SDK could not read
            raise LLMError("the model server sent an unreadable title") from exc
        choices = completion.choices
        return (choices[0].message.content or "") if choices else ""

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
        try:
            length = msgspec.convert(props, _Props).default_generation_settings.n_ctx
        except msgspec.ValidationError:
            return None
        return length if length > 0 else None

    async def _deltas(self, response: httpx2.Response) -> AsyncIterator[Delta]:
        decoder = StreamDecoder()
        try:
            async for data in response.aiter_bytes():
                delta, done, error = decoder.feed(data)
                if delta is not None:
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
        decoder.end()
