"""The body of an OpenAI-compatible stream, decoded: bytes in, :class:`Delta` values out.

Pure (no I/O), so each server's quirks are tested on bytes alone. The events are
decoded with msgspec rather than the SDK's pydantic ``ChatCompletionChunk``, which
costs most of a relay's CPU (docs/architecture.md, providers), and one network read
becomes one ``Delta``, so a burst of chunks is relayed as one event.

The quirks: reasoning comes as ``reasoning_content`` (vLLM, DeepSeek, llama.cpp) or
``reasoning`` (Ollama, OpenRouter); usage on a chunk of its own; tool calls in
fragments, numbered or not, their arguments as text or (a few servers) one object;
an ``error`` event mid-stream; and a stream that ends with no finish reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from chatsvc.errors import EmptyReply, LLMError
from chatsvc.providers.port import Delta
from chatsvc.tree import ToolCall
from chatsvc.wire import Usage

log = logging.getLogger("chatsvc.providers")


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


class _ChunkUsage(msgspec.Struct):
    """Usage as servers send it: either count may be missing, other fields come along."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def as_usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: _ChunkUsage | None = None
    error: _ChunkError | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


@dataclass
class _PartialCall:
    index: int
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list[str])


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

    def take(self) -> tuple[ToolCall, ...]:
        calls = tuple(
            ToolCall(id=call.id or f"call_{n}", name=call.name, arguments="".join(call.arguments))
            for n, call in enumerate(self._calls)
        )
        self._calls.clear()
        return calls


class Read(NamedTuple):
    """What the events of one read come to: a delta, whether ``[DONE]`` came, and the
    error that ended the stream (after the delta: tokens read with it are kept)."""

    delta: Delta | None
    done: bool = False
    error: LLMError | None = None


def _parse_events(lines: list[bytes], tools: _ToolCalls) -> Read:
    """Fold the ``data:`` lines of one read into one delta, up to ``[DONE]`` or an error.

    Tool call fragments gather in ``tools``; the calls come out whole on the delta that
    ends the answer (its finish reason, or ``[DONE]``).
    """
    text: list[str] = []
    reasoning: list[str] = []
    usage: _ChunkUsage | None = None
    finish_reason: str | None = None
    done = False
    error: LLMError | None = None
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
        return Read(None, done, error)
    delta = Delta(
        text="".join(text),
        reasoning="".join(reasoning),
        usage=None if usage is None else usage.as_usage(),
        finish_reason=finish_reason,
        tool_calls=calls,
    )
    return Read(delta, done, error)


class StreamDecoder:
    """The deltas of one stream's body, fed read by read; :meth:`end` judges how it ended.

    A read may end mid-line: the rest waits for the next read.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._tools = _ToolCalls()
        self._finished = False
        self._sent = False

    def feed(self, data: bytes) -> Read:
        """What one read brought; stop reading once it is ``done`` or has an ``error``."""
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        read = _parse_events(lines, self._tools)
        if (delta := read.delta) is not None:
            self._finished = self._finished or delta.finish_reason is not None
            self._finished = self._finished or bool(delta.tool_calls)
            self._sent = True
        return read

    def end(self) -> None:
        """The body ended (or ``[DONE]`` came): raise unless the model finished its answer."""
        if not (self._finished or self._sent):
            # llama-cpp-python answers a prompt longer than its context this way (issue 13).
            log.warning("upstream stream ended empty")
            raise EmptyReply("the model server sent an empty reply")
        if not self._finished:
            # No finish reason: the body ended, or a bare `[DONE]` came (llama-cpp-python ends
            # a reply that way when another request interrupts it). Not a finished answer.
            log.warning("upstream stream ended without a finish reason")
            raise LLMError("the model server ended the reply early")
