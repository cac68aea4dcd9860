"""One reply's task: its error boundary, its deadline, how it ended, and its end, stored
once and then announced.

``Runner.run`` holds the reply's ``CancelScope`` (its deadline is ``LLM_TOTAL_TIMEOUT``)
around the conversation, and decides the ending in one place:

==========================  ===============  ==========================
what happened               stored status    terminal event
==========================  ===============  ==========================
the upstream finished       ``complete``     ``done``
``abort`` (scope cancelled) ``aborted``      ``aborted``
upstream or internal error  ``failed``       ``error`` with the task id
deadline passed             ``failed``       ``error`` ``timeout``
the server shuts down       ``interrupted``  (sockets are closing)
==========================  ===============  ==========================

The partial text is kept in every case. The final write runs shielded from
cancellation and bounded in time (``store.finish_reply``); when the database does not
take it, it is tried again, backing off, and the end is announced only once it is
stored: a ``debug`` event (timings and counts), then the terminal event.

Abort is structured cancellation: cancelling the reply's scope raises at the await in
progress, leaving ``async with provider.stream(...)`` closes the upstream HTTP
connection (so the model stops generating and billing), and the runner stores what
was streamed. Nothing polls a flag. A tool call being applied is shielded: an abort
lets it finish (its change stays) and stops every later one at the next checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import msgspec

from chatsvc import store
from chatsvc.errors import ChatsvcError, GenerationTimeout, InternalError
from chatsvc.events import ChatEvents, event_of
from chatsvc.generation import frames
from chatsvc.generation.conversation import Conversation
from chatsvc.generation.reply import Ending, Generation, Status
from chatsvc.mappers import message_from_record
from chatsvc.records import MessageRecord
from chatsvc.settings import Settings
from chatsvc.telemetry import Telemetry
from chatsvc.wire import Usage

log = logging.getLogger("chatsvc.generation")

#: A reply's end that the database did not take is tried again, backing off, this long.
END_RETRY_SECONDS = 600.0
END_RETRY_FIRST_PAUSE = 0.5
END_RETRY_MAX_PAUSE = 5.0


class Runner:
    """Runs replies to their end; ``leave`` takes a reply out of the registry once stored;
    ``completed`` is told of each reply stored ``complete``, once its ``done`` is out (it
    must not block: the registry starts the chat's naming in its task group)."""

    def __init__(
        self,
        settings: Settings,
        conversation: Conversation,
        events: ChatEvents,
        telemetry: Telemetry,
        leave: Callable[[Generation], None],
        completed: Callable[[Generation], None] | None = None,
    ) -> None:
        self._settings = settings
        self._conversation = conversation
        self._events = events
        self._telemetry = telemetry
        self._leave = leave
        self._completed = completed

    async def run(self, generation: Generation) -> None:
        """The reply's task: converse, then finish, however it ends."""
        ending = Ending("failed")
        try:
            ending = await self._converse(generation)
        except anyio.get_cancelled_exc_class():  # the app's task group: the server stops
            ending = Ending("interrupted")
            raise
        finally:
            await self.finish(generation, ending)

    async def _converse(self, generation: Generation) -> Ending:
        """The conversation in the reply's scope and deadline, and how it ended: the
        task's one error boundary (an error is logged and ends this reply only)."""
        status: Status = "failed"
        error: ChatsvcError | None = None
        with generation.scope:
            generation.scope.deadline = anyio.current_time() + self._settings.llm_total_timeout
            try:
                await self._conversation.converse(generation)
                status = "complete"
            except ChatsvcError as exc:
                error = exc
            except Exception:  # this task's one error boundary: log, fail, keep siblings
                log.exception("generation %s failed", generation.task_id)
                error = InternalError("the reply failed on the server")
        if generation.scope.cancelled_caught:
            if generation.abort_requested:
                status = "aborted"
            elif generation.interrupt_requested:
                status = "interrupted"
            else:
                error = GenerationTimeout("the reply took too long")
        return Ending("failed", error) if error is not None else Ending(status)

    async def finish(self, generation: Generation, ending: Ending) -> None:
        """Store the reply once, then announce its end; always leaves the registry.

        ``run`` calls it however the conversation ended, cancelled or not."""
        status = ending.status
        # A reply no model server accepted (unreachable, refused, circuit open) cost nothing.
        usage = generation.usage = generation.usage or Usage(prompt_tokens=0, completion_tokens=0)
        try:
            reply = await self._store_end(generation, ending, usage)
        except anyio.get_cancelled_exc_class():  # stopped while waiting to try again
            generation.finished.set()
            raise
        finally:
            self._leave(generation)
        generation.reply = message_from_record(reply) if reply is not None else None
        generation.error = ending.error
        stored = status == "interrupted" or (
            status in ("complete", "aborted") and generation.reply is not None
        )
        if not stored:
            generation.error = ending.error or InternalError("the reply could not be stored")
        terminal = frames.terminal(generation, status)
        if terminal is not None:
            self._publish(generation, frames.debug(generation, status, anyio.current_time()))
            self._publish(generation, terminal)
        elif status == "interrupted":  # sockets here are closing; elsewhere they are not
            frame = frames.interrupted(generation.task_id, generation.chat_id)
            self._events.publish_remote(generation.chat_id, event_of(frame))
        generation.finished.set()
        self._tell_telemetry(generation, status, usage)
        if status == "complete" and generation.reply is not None and self._completed:
            self._completed(generation)

    async def _store_end(
        self, generation: Generation, ending: Ending, usage: Usage
    ) -> MessageRecord | None:
        """The reply's one final write. When the database cannot take it in time, it is
        tried again (backing off, each try shielded) until it lands or ``END_RETRY_SECONDS``
        pass: the reply stays registered meanwhile, and is announced once, when stored.
        A stop cancels the waiting between tries; the next start recovers the reply."""
        give_up_at = anyio.current_time() + END_RETRY_SECONDS
        pause = END_RETRY_FIRST_PAUSE
        attempt = 0
        while True:
            attempt += 1
            try:
                return await store.finish_reply(
                    generation.message_id,
                    generation.chat_id,
                    owner=generation.owner,
                    status=ending.status,
                    content=generation.content,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    usage_estimated=usage.estimated,
                    finish_reason=generation.finish_reason,
                    error_code=ending.error.code if ending.error else None,
                    tool_calls=generation.tool_calls,
                    reasoning=generation.reasoning,
                )
            except Exception as exc:  # every failure of the write is worth another try
                if anyio.current_time() + pause > give_up_at:
                    log.error(
                        "could not store the end of reply %s after %d tries (%s); it stays "
                        "'streaming' until the next start",
                        generation.message_id,
                        attempt,
                        _describe(exc),
                    )
                    return None
                log.warning(
                    "could not store the end of reply %s (%s); trying again in %.1f s",
                    generation.message_id,
                    _describe(exc),
                    pause,
                )
            await anyio.sleep(pause)
            pause = min(pause * 2, END_RETRY_MAX_PAUSE)

    def _tell_telemetry(self, generation: Generation, status: Status, usage: Usage) -> None:
        """The audit line and the metrics of the reply's end."""
        now = anyio.current_time()
        asked_at = generation.abort_requested_at
        self._telemetry.generation_ended(
            status=status,
            user_id=generation.owner,
            chat_id=generation.chat_id,
            task_id=generation.task_id,
            duration=now - generation.started_at,
            events=generation.seq + 1,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
            model=generation.model,
            finish_reason=generation.finish_reason,
            error_code=generation.error.code if generation.error else None,
            aborted_by=generation.aborted_by if status == "aborted" else None,
            abort_latency=now - asked_at if status == "aborted" and asked_at is not None else None,
        )

    def _publish(self, generation: Generation, frame: msgspec.Struct) -> None:
        self._events.publish(generation.chat_id, event_of(frame))


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, ChatsvcError) else f"{type(exc).__name__}: {exc}"
