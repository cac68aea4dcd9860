"""The frames a reply sends, built from its state: pure functions, nothing published here."""

from __future__ import annotations

from uuid import UUID

import msgspec

from chatsvc.errors import ChatsvcError
from chatsvc.generation.reply import Generation, Status
from chatsvc.wire import (
    Aborted,
    DebugEvent,
    Done,
    ErrorEvent,
    ReasoningEvent,
    Snapshot,
    Started,
    TokenEvent,
)


def started(generation: Generation, request_id: str | None) -> Started:
    return Started(
        task_id=generation.task_id,
        chat_id=generation.chat_id,
        message_id=generation.message_id,
        request_id=request_id,
    )


def text(
    generation: Generation, kind: type[TokenEvent] | type[ReasoningEvent], token: str
) -> TokenEvent | ReasoningEvent:
    """A ``token`` or ``reasoning`` event numbered with the reply's current ``seq``."""
    return kind(
        task_id=generation.task_id, chat_id=generation.chat_id, seq=generation.seq, token=token
    )


def snapshot(generation: Generation) -> Snapshot:
    """What the reply has said so far (text and reasoning), up to and including event ``seq``."""
    return Snapshot(
        task_id=generation.task_id,
        chat_id=generation.chat_id,
        message_id=generation.message_id,
        seq=generation.seq,
        content=generation.content,
        reasoning=generation.reasoning,
    )


def debug(generation: Generation, status: Status, now: float) -> DebugEvent:
    """Timings (ms) and counts of the reply, for the sockets that asked for them."""

    def ms(since: float | None, until: float | None = now) -> float | None:
        if since is None or until is None:
            return None
        return round((until - since) * 1000, 3)

    aborted = status == "aborted"
    data = {
        "status": status,
        "duration_ms": ms(generation.started_at),
        "upstream_first_token_ms": ms(generation.upstream_started_at, generation.first_token_at),
        "tokens": generation.seq + 1,
        "rounds": generation.rounds,
        "tool_rounds": generation.tool_rounds,
        "tool_calls": len(generation.tool_calls),
        "cancel_latency_ms": ms(generation.abort_requested_at) if aborted else None,
    }
    return DebugEvent(chat_id=generation.chat_id, task_id=generation.task_id, data=data)


def terminal(generation: Generation, status: Status) -> msgspec.Struct | None:
    """``done`` or ``aborted`` with the stored reply, else ``error`` with the reply's error;
    none when interrupted (the sockets are closing)."""
    reply = generation.reply
    if status == "complete" and reply is not None:
        return Done(
            task_id=generation.task_id,
            chat_id=generation.chat_id,
            message=reply,
            usage=generation.usage,
            finish_reason=generation.finish_reason,
        )
    if status == "aborted" and reply is not None:
        return Aborted(task_id=generation.task_id, chat_id=generation.chat_id, message=reply)
    if status == "interrupted":
        return None
    assert generation.error is not None
    return error(generation.task_id, generation.chat_id, generation.error)


def error(task_id: UUID, chat_id: UUID, error: ChatsvcError) -> ErrorEvent:
    return ErrorEvent(task_id=task_id, chat_id=chat_id, code=error.code, message=error.message)


def interrupted(task_id: UUID, chat_id: UUID) -> ErrorEvent:
    """What followers elsewhere hear of a reply whose server stopped."""
    return ErrorEvent(
        task_id=task_id,
        chat_id=chat_id,
        code="internal",
        message="the reply was interrupted: the server running it stopped",
    )
