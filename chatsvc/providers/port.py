"""The port every provider fits: ``stream(request)`` yields :class:`Delta` values.

Tools: a request may offer function ``tools``; the model's calls come back whole
on the delta that ends its answer (``Delta.tool_calls``, finish reason
``tool_calls``), and the next request carries the assistant turn with the calls
and one ``tool`` turn per result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from chatsvc.tree import ToolCall
from chatsvc.wire import Usage

CircuitState = Literal["closed", "open", "half-open"]


class ChatTurn(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the conversation sent upstream.

    An assistant turn may carry the ``tool_calls`` it made; each gets its answer
    in a ``tool`` turn naming it by ``tool_call_id``.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: list[ChatTurn]
    #: Sampling settings; ``None``: not sent, the server's own default holds.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    #: Function tools offered to the model (OpenAI's ``tools`` shape); none: no tools.
    tools: list[dict[str, Any]] | None = None


class Delta(msgspec.Struct, frozen=True, kw_only=True):
    """What one read from the upstream brought."""

    text: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    #: Complete tool calls, on the delta that ends the model's answer (never fragments).
    tool_calls: tuple[ToolCall, ...] = ()


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

    async def title(self, model: str, question: str, answer: str) -> str:
        """A few words naming a chat that starts with ``question`` and ``answer``, as the
        model wrote them (``titles.clean`` makes them a title): one short request, not
        streamed, bounded in tokens and time. Raises ``ChatsvcError`` when it fails."""
        ...
