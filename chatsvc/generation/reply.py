"""A reply being generated (``Generation``), its upstream rounds as billed (``Round``), how it
ended (``Ending``), the replies running on this process (``Running``), and the handle of an
abort on its way (``Aborting``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import anyio
import msgspec

from chatsvc.context import estimate_tokens
from chatsvc.errors import ChatsvcError
from chatsvc.events import ChatEvents, Event
from chatsvc.providers import CompletionRequest
from chatsvc.telemetry import AbortedBy
from chatsvc.wire import Message, Usage

#: How a reply ends, as stored (``streaming`` is the status while it runs).
Status = Literal["complete", "aborted", "failed", "interrupted"]


@dataclass(eq=False)
class Generation:
    """One running reply. ``scope`` is what ``abort`` cancels."""

    task_id: UUID
    chat_id: UUID
    owner: int
    message_id: UUID
    model: str
    system_prompt: str
    #: The sampling settings sent upstream: the chat's, else the server's (``None``: not sent).
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    #: The user message the reply answers: the history sent upstream ends there.
    question_id: UUID | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    abort_requested: bool = False
    interrupt_requested: bool = False
    parts: list[str] = field(default_factory=list[str])
    #: The reasoning streamed so far (stored with the reply, issue 15).
    thoughts: list[str] = field(default_factory=list[str])
    seq: int = -1
    #: What the upstream said of the reply: usage summed over the rounds it accepted (each
    #: figure it did not send estimated, ``Round``), the last round's finish reason.
    usage: Usage | None = None
    finish_reason: str | None = None
    finished: anyio.Event = field(default_factory=anyio.Event)
    #: Set when finished: the stored reply, and the error that ended it (if one did).
    reply: Message | None = None
    error: ChatsvcError | None = None
    #: For the audit log and metrics (``anyio.current_time()`` values).
    started_at: float = 0.0
    first_token_at: float | None = None
    aborted_by: AbortedBy | None = None
    abort_requested_at: float | None = None
    upstream_started_at: float | None = None
    #: Upstream streams opened, and rounds of tool calls applied between them.
    rounds: int = 0
    tool_rounds: int = 0
    #: The tool calls applied, as stored with the reply: ``name``, ``arguments``, ``result``.
    tool_calls: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    #: The chat's title is a placeholder: once the reply completes, the model names the chat.
    wants_title: bool = False

    @property
    def content(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.thoughts)

    def count(self, round_: Round, request: CompletionRequest) -> None:
        """Add a round the server accepted to the reply's usage (every one is billed)."""
        self.usage = _sum(self.usage, round_.usage(request))

    def abort(self, by: AbortedBy) -> None:
        """Cancel the reply's scope; the first abort is the one counted."""
        if not self.abort_requested:
            self.abort_requested = True
            self.aborted_by = by
            self.abort_requested_at = anyio.current_time()
        self.scope.cancel()

    def interrupt(self) -> None:
        """Cancel the reply's scope because the server stops."""
        self.interrupt_requested = True
        self.scope.cancel()


@dataclass
class Round:
    """One upstream round as it went: whether the server accepted it (answered with a
    stream), the characters it streamed (text, reasoning, tool calls), its usage."""

    accepted: bool = False
    chars: int = 0
    reported: Usage | None = None

    def usage(self, request: CompletionRequest) -> Usage:
        """The server's figures; each one it did not send, estimated and marked so: the
        prompt from the request sent, the completion from what was streamed."""
        reported = self.reported or Usage(prompt_tokens=None, completion_tokens=None)
        prompt, completion = reported.prompt_tokens, reported.completion_tokens
        return Usage(
            prompt_tokens=estimate_tokens(_prompt_chars(request)) if prompt is None else prompt,
            completion_tokens=estimate_tokens(self.chars) if completion is None else completion,
            estimated=prompt is None or completion is None,
        )


def _prompt_chars(request: CompletionRequest) -> int:
    """Characters of what a request sends the model: every turn, its tool calls, the tools."""
    chars = sum(
        len(turn.content) + sum(len(call.name) + len(call.arguments) for call in turn.tool_calls)
        for turn in request.messages
    )
    return chars + (len(msgspec.json.encode(request.tools).decode()) if request.tools else 0)


def _sum(before: Usage | None, round_: Usage) -> Usage:
    """Rounds add up; one estimated figure makes the sum an estimate."""
    if before is None:
        return round_
    return Usage(
        prompt_tokens=(before.prompt_tokens or 0) + (round_.prompt_tokens or 0),
        completion_tokens=(before.completion_tokens or 0) + (round_.completion_tokens or 0),
        estimated=before.estimated or round_.estimated,
    )


@dataclass(frozen=True)
class Ending:
    """How a reply ended: decided once, by the runner."""

    status: Status
    error: ChatsvcError | None = None


class Running:
    """The replies running on this process, by task id and by chat id."""

    def __init__(self) -> None:
        self._by_task: dict[UUID, Generation] = {}
        self._by_chat: dict[UUID, Generation] = {}

    def __len__(self) -> int:
        return len(self._by_task)

    def __iter__(self) -> Iterator[Generation]:
        return iter(list(self._by_task.values()))

    def of_task(self, task_id: UUID) -> Generation | None:
        return self._by_task.get(task_id)

    def in_chat(self, chat_id: UUID) -> Generation | None:
        return self._by_chat.get(chat_id)

    def chats_of(self, owner: int) -> list[UUID]:
        """The chats where ``owner``'s replies run (a new chat's counts before it is stored)."""
        return [g.chat_id for g in self._by_task.values() if g.owner == owner]

    def add(self, generation: Generation, *, in_chat: bool = True) -> None:
        self._by_task[generation.task_id] = generation
        if in_chat:
            self._by_chat[generation.chat_id] = generation

    def remove(self, generation: Generation) -> None:
        self._by_task.pop(generation.task_id, None)
        if self._by_chat.get(generation.chat_id) is generation:
            del self._by_chat[generation.chat_id]


class Aborting:
    """An abort on its way: follows the chat until the reply's terminal event."""

    def __init__(self, events: ChatEvents, task_id: UUID, chat_id: UUID, message_id: UUID) -> None:
        self.task_id = task_id
        self.chat_id = chat_id
        self.message_id = message_id
        self._events = events
        self._end: Event | None = None
        self._ended = anyio.Event()
        events.subscribe(chat_id, self)

    def deliver(self, event: Event) -> None:
        if event.ends_task and event.task_id == self.task_id:
            self._end = event
            self._ended.set()
            self.forget()

    def forget(self) -> None:
        self._events.unsubscribe(self.chat_id, self)

    async def ended(self) -> Event:
        """The terminal event (bound the wait: an interrupted reply sends none here)."""
        try:
            await self._ended.wait()
        finally:
            self.forget()
        assert self._end is not None
        return self._end
