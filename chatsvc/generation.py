"""Generations: one assistant reply streaming from the LLM, and how it ends.

Read this module first. The life of a reply:

1. ``Generations.start`` checks the limits, stores the user's message and an
   empty ``streaming`` reply in one transaction, publishes ``message`` and
   ``started``, and launches ``_run`` in the app-wide task group.
2. ``_run`` opens the upstream stream inside the generation's own
   ``CancelScope`` and relays each delta as a ``token`` (or ``reasoning``)
   event with the next ``seq``. Every few seconds one write saves the text so
   far of every running reply.
3. Tool rounds (the workspace tree tools, docs/protocol.md section 5): when an
   upstream stream ends asking for tool calls, each call is applied in turn
   (``Trees.apply_tool``: one version each, ``tree_update`` to every
   subscriber), then the calls and their results go back to the model and a
   new stream starts. Its text continues the same reply (``seq`` goes on). At
   most ``MAX_TOOL_ROUNDS`` rounds: the model asking for one more ends the
   reply ``done`` with finish reason ``tool_rounds_exceeded``.
4. It ends in exactly one way, decided by what stopped it:

   ==========================  ===============  ==========================
   what happened               stored status    terminal event
   ==========================  ===============  ==========================
   the upstream finished       ``complete``     ``done``
   ``abort`` (scope cancelled) ``aborted``      ``aborted``
   upstream or internal error  ``failed``       ``error`` with the task id
   deadline passed             ``failed``       ``error`` ``timeout``
   the server shuts down       ``interrupted``  (sockets are closing)
   ==========================  ===============  ==========================

   The partial text is kept in every case. The final write runs shielded
   from cancellation and bounded in time, and the terminal event is sent
   only once the reply is safely stored.

Abort is structured cancellation: cancelling the scope raises at the await in
progress, leaving ``async with provider.stream(...)`` closes the upstream HTTP
connection (so the model stops generating and billing), and the ``finally``
persists what was streamed. Nothing polls a flag. A tool call being applied
is shielded: an abort lets it finish (its change stays) and stops every later
one at the next checkpoint.

Just before the terminal event, a ``debug`` event gives the reply's timings
and counts (the sockets decide who gets it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self
from uuid import UUID, uuid4

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from chatsvc import store
from chatsvc.bus import AbortRequest, EventBus, SnapshotRequest, instance_channel
from chatsvc.context import CHARS_PER_TOKEN, ContextBudgets
from chatsvc.errors import (
    Busy,
    ChatsvcError,
    ContextOverflow,
    EmptyReply,
    GenerationTimeout,
    InternalError,
    InvalidInput,
    NotFound,
    NotRunning,
    Overloaded,
    RateLimited,
    TooLarge,
)
from chatsvc.events import ChatEvents, Event, Subscriber, event_of
from chatsvc.instances import Lease
from chatsvc.mappers import chat_from_record, message_from_record
from chatsvc.providers import ChatTurn, CompletionRequest, Delta, LLMProvider, ToolRequest
from chatsvc.records import InterruptedReply, MessageRecord
from chatsvc.settings import Settings
from chatsvc.tasks import background_tasks
from chatsvc.telemetry import AbortedBy, Telemetry
from chatsvc.tree import TOOLS, ToolCall
from chatsvc.trees import Trees
from chatsvc.wire import (
    Aborted,
    ChatCreated,
    DebugEvent,
    Done,
    ErrorEvent,
    Message,
    MessageEvent,
    ReasoningEvent,
    Snapshot,
    Started,
    TokenEvent,
    Usage,
    encode_frame,
)

log = logging.getLogger("chatsvc.generation")

BUS_READY_SECONDS = 5.0
TITLE_CHARS = 80
#: A reply's end that the database did not take is tried again, backing off, this long.
END_RETRY_SECONDS = 600.0
END_RETRY_FIRST_PAUSE = 0.5
END_RETRY_MAX_PAUSE = 5.0


@dataclass(eq=False)
class Generation:
    """One running reply. ``scope`` is what ``abort`` cancels."""

    task_id: UUID
    chat_id: UUID
    owner: int
    message_id: UUID
    model: str
    system_prompt: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    abort_requested: bool = False
    interrupt_requested: bool = False
    parts: list[str] = field(default_factory=list)
    seq: int = -1
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
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(self.parts)


@dataclass
class _Outcome:
    status: str = "failed"
    usage: Usage | None = None
    finish_reason: str | None = None
    error: ChatsvcError | None = None


class Generations(anyio.AsyncContextManagerMixin):
    """The registry of running generations and the task group they run in."""

    def __init__(
        self,
        settings: Settings,
        provider: LLMProvider,
        events: ChatEvents,
        bus: EventBus,
        telemetry: Telemetry | None = None,
        trees: Trees | None = None,
        budgets: ContextBudgets | None = None,
    ) -> None:
        self._settings = settings
        self._budgets = budgets or ContextBudgets(
            settings.context_budget_tokens, settings.llm_max_tokens
        )
        self._provider = provider
        self._events = events
        self._bus = bus
        #: Without ``trees`` (or with ``TREE_TOOLS`` off) the model is offered no tools.
        self._trees = trees if settings.tree_tools else None
        self._lease = Lease(bus.instance, settings.instance_lease_seconds)
        self._telemetry = telemetry or Telemetry()
        self._by_task: dict[UUID, Generation] = {}
        self._by_chat: dict[UUID, Generation] = {}
        self._offered_models = frozenset(settings.model_choices)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closing = False

    @property
    def instance(self) -> str:
        return self._lease.id

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        """Hold the lease and run the task group of the replies until the body ends.

        What was entered is undone in reverse however entering or the body ends:
        the task group is always exited (its tasks cancelled), then the lease dropped.
        """
        await self._lease.take()
        try:
            # Without a shared bus this is the only instance: whatever still streams is a
            # crashed predecessor's, however fresh its lease (issue 12).
            await self._lease.recover(self._announce_interrupted, alone=not self._bus.shared)
            async with self._running():
                yield self
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._lease.drop()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        """The task group of the replies and the background loops, cancelled when the body ends
        (the replies still running end ``interrupted``)."""
        async with background_tasks() as task_group:
            self._task_group = task_group
            try:
                task_group.start_soon(self._save_partial_replies, name="checkpoints")
                task_group.start_soon(self._lease.keep, self._announce_interrupted, name="lease")
                if self._bus.shared:
                    await self._start_serving_requests(task_group)
                yield
            finally:
                if self._by_task:
                    running = len(self._by_task)
                    log.info("shutting down: interrupting %d running generations", running)

    async def _start_serving_requests(self, task_group: anyio.abc.TaskGroup) -> None:
        """Answer other instances; wait a while for the bus, and start anyway if it is down."""
        ready = anyio.Event()
        task_group.start_soon(self._serve_requests, ready, name="bus requests")
        with anyio.move_on_after(BUS_READY_SECONDS):
            await ready.wait()
        if not ready.is_set():
            log.error(
                "event bus: no answer in %g s; requests from others may be lost",
                BUS_READY_SECONDS,
            )

    # --- queries ------------------------------------------------------------------------

    async def follow(self, chat_id: UUID, owner: int, subscriber: Subscriber) -> Snapshot | None:
        """Subscribe to a chat; if a reply streams there, what it has said so far.

        For a reply running here, subscribing and reading its text happen without
        an await in between, and events are published in the same way, so the
        next event the subscriber gets is the one numbered ``seq + 1``: no gap, no
        duplicate. For a reply running on another instance, the snapshot comes
        from there, later, and the events hub keeps the same promise.
        """
        if chat_id not in self._by_chat and self._bus.shared:
            running = await store.find_running(
                owner, task_id=None, chat_id=chat_id, live_after=self._lease.live_after()
            )
            if (
                running is not None
                and running.instance != self.instance
                and chat_id not in self._by_chat
            ):
                await self._events.follow_remote(
                    chat_id,
                    subscriber,
                    task_id=running.task_id,
                    owner_instance=running.instance,
                )
                return None
        generation = self._by_chat.get(chat_id)
        self._events.subscribe(chat_id, subscriber)
        if generation is not None and not generation.finished.is_set():
            return self._snapshot(generation)
        await self._events.feed_ready(chat_id)
        return None

    def _snapshot(self, generation: Generation) -> Snapshot:
        return Snapshot(
            task_id=generation.task_id,
            chat_id=generation.chat_id,
            message_id=generation.message_id,
            seq=generation.seq,
            content=generation.content,
        )

    def running_for(self, owner: int) -> int:
        return sum(1 for g in self._by_task.values() if g.owner == owner)

    # --- start --------------------------------------------------------------------------

    async def start(
        self,
        owner: int,
        content: str,
        *,
        chat_id: UUID | None = None,
        request_id: str | None = None,
        subscriber: Subscriber | None = None,
    ) -> Generation:
        """Store the user's message, then launch the reply. The subscriber follows the chat."""
        settings = self._settings
        if self._closing:
            raise InternalError("the server is shutting down; try again in a moment")
        if len(content) > settings.max_message_chars:
            raise TooLarge(f"content: longer than {settings.max_message_chars} characters")
        if not content.strip():
            raise InvalidInput("content: must not be blank")
        self._check_fits(content)
        generation = Generation(
            task_id=uuid4(),
            chat_id=chat_id or uuid4(),  # a new chat's id is known once it is stored
            owner=owner,
            message_id=uuid4(),
            model=settings.model_name,  # the chat's own, once it is read
            system_prompt=settings.default_system_prompt,
            started_at=anyio.current_time(),
        )
        # From the checks to the registration nothing awaits: two requests cannot both pass.
        running = self._by_chat.get(chat_id) if chat_id is not None else None
        if running is not None and running.owner != owner:
            raise NotFound("chat not found")  # another user's chat, as everywhere
        if running is not None:
            raise Busy("a reply is already being generated in this chat")
        self._check_cap(owner)
        self._by_task[generation.task_id] = generation
        if chat_id is not None:
            self._by_chat[chat_id] = generation
        try:
            stored = await store.create_exchange(
                owner,
                chat_id=chat_id,
                new_chat_title=_title_from(content),
                user_content=content,
                assistant_id=generation.message_id,
                default_model=settings.model_name,
                offered_models=self._offered_models,
                task_id=generation.task_id,
                instance=self.instance,
                live_after=self._lease.live_after(),
                per_user_cap=settings.max_concurrent_generations,
                max_chats=settings.max_chats_per_user,
            )
            if stored is None:  # deleted in the meantime
                raise NotFound("chat not found")
        except BaseException:
            self._unregister(generation)
            raise
        generation.model = stored.reply.model or settings.model_name
        generation.system_prompt = stored.chat.system_prompt or settings.default_system_prompt
        if stored.created:
            generation.chat_id = stored.chat.id
            self._by_chat[generation.chat_id] = generation
        if subscriber is not None:
            self._events.subscribe(generation.chat_id, subscriber)
        if stored.created:
            self._publish(
                generation, ChatCreated(chat=chat_from_record(stored.chat), request_id=request_id)
            )
        self._publish(
            generation,
            MessageEvent(message=message_from_record(stored.question), request_id=request_id),
        )
        self._publish(
            generation,
            Started(
                task_id=generation.task_id,
                chat_id=generation.chat_id,
                message_id=generation.message_id,
                request_id=request_id,
            ),
        )
        assert self._task_group is not None
        self._task_group.start_soon(self._run, generation, name=f"generation {generation.task_id}")
        self._telemetry.generation_started(
            user_id=owner, chat_id=generation.chat_id, task_id=generation.task_id
        )
        return generation

    def _check_fits(self, content: str) -> None:
        """Refuse, before storing it, a message that no offered model's context can take.
        (The chat's own model is checked again when the request is built.)"""
        room = max(self._budgets.chars(model) for model in self._offered_models)
        if len(content) > room:
            raise ContextOverflow(
                f"content: about {len(content) // CHARS_PER_TOKEN} tokens, more than the "
                f"model's context takes ({room // CHARS_PER_TOKEN}); shorten it"
            )

    def _check_cap(self, owner: int) -> None:
        cap = self._settings.max_concurrent_generations
        if self.running_for(owner) >= cap:
            raise RateLimited(f"at most {cap} replies may be generated at once; wait for one")

    def _unregister(self, generation: Generation) -> None:
        self._by_task.pop(generation.task_id, None)
        if self._by_chat.get(generation.chat_id) is generation:
            del self._by_chat[generation.chat_id]

    # --- abort ---------------------------------------------------------------------------

    async def abort(
        self,
        owner: int,
        *,
        task_id: UUID | None = None,
        chat_id: UUID | None = None,
        by: AbortedBy = "socket",
    ) -> Aborting:
        """Cancel a running reply of ``owner``'s, here or on another instance.

        ``NotRunning`` for anything else, but ``NotFound`` when ``chat_id`` names a chat
        that is not ``owner``'s (as ``subscribe`` and ``send_message`` answer). The
        handle tells how the reply ended.
        """
        if task_id is not None:
            generation = self._by_task.get(task_id)
        else:
            generation = self._by_chat.get(chat_id) if chat_id is not None else None
        if generation is not None and generation.owner == owner:
            aborting = Aborting(
                self._events, generation.task_id, generation.chat_id, generation.message_id
            )
            self._cancel(generation, by)
            return aborting
        running = None
        if self._bus.shared:
            running = await store.find_running(
                owner, task_id=task_id, chat_id=chat_id, live_after=self._lease.live_after()
            )
        if running is None or running.instance == self.instance:
            # Only on this path, so an abort that finds its reply waits for no query.
            if chat_id is not None and await store.get_chat(owner, chat_id) is None:
                raise NotFound("chat not found")
            raise NotRunning("no reply is being generated there")
        aborting = Aborting(self._events, running.task_id, running.chat, running.id)
        await self._events.feed_ready(running.chat)
        request = AbortRequest(origin=self.instance, owner=owner, task_id=running.task_id, by=by)
        self._bus.publish(instance_channel(running.instance), request)
        return aborting

    def _cancel(self, generation: Generation, by: AbortedBy) -> None:
        if not generation.abort_requested:
            generation.abort_requested = True
            generation.aborted_by = by
            generation.abort_requested_at = anyio.current_time()
        generation.scope.cancel()

    async def interrupt_all(self) -> int:
        """Stop every running reply as ``interrupted`` and wait until each is stored.

        Called first when the server stops, before sockets are closed, so that
        what is stored is what the clients were sent.
        """
        self._closing = True
        running = list(self._by_task.values())
        for generation in running:
            generation.interrupt_requested = True
            generation.scope.cancel()
        for generation in running:
            await generation.finished.wait()
        return len(running)

    async def stop(
        self, owner: int, chat_id: UUID, *, by: AbortedBy = "rest"
    ) -> tuple[UUID, Message] | None:
        """Abort the reply running in the chat, if any, and wait until it is stored.

        Gives the task id and the stored reply.
        """
        try:
            aborting = await self.abort(owner, chat_id=chat_id, by=by)
        except NotRunning:
            return None
        with anyio.move_on_after(self._settings.shutdown_timeout):
            await aborting.ended()
        generation = self._by_task.get(aborting.task_id)
        if generation is not None:  # interrupted here: no terminal event, but it is stored
            await generation.finished.wait()
        reply = await store.get_message(aborting.message_id)
        if reply is None:
            raise InternalError("the reply could not be stored")
        return aborting.task_id, message_from_record(reply)

    # --- other instances ---------------------------------------------------------------

    async def _serve_requests(self, ready: anyio.Event) -> None:
        """Requests of other instances about the replies running here."""
        requests = self._bus.listen(instance_channel(self.instance), ready)
        async with aclosing(requests):
            async for request in requests:
                match request:
                    case AbortRequest():
                        generation = self._by_task.get(request.task_id)
                        if generation is not None and generation.owner == request.owner:
                            self._cancel(generation, request.by)
                    case SnapshotRequest():
                        self._answer_snapshot(request.chat_id)

    def _answer_snapshot(self, chat_id: UUID) -> None:
        """The snapshot goes out on the chat's channel, in order with the tokens after it."""
        generation = self._by_chat.get(chat_id)
        if generation is None or generation.finished.is_set():
            self._events.publish_remote(chat_id, Event("snapshot", None, b"null"))
            return
        snapshot = self._snapshot(generation)
        self._events.publish_remote(
            chat_id, Event("snapshot", generation.task_id, encode_frame(snapshot), generation.seq)
        )

    async def _announce_interrupted(self, replies: list[InterruptedReply]) -> None:
        """Subscribers of a reply interrupted by its instance's end hear that it ended."""
        for reply in replies:
            if reply.task_id is None:
                continue
            frame = _interrupted_frame(reply.task_id, reply.chat)
            self._events.publish(reply.chat, event_of(frame))

    # --- run -------------------------------------------------------------------------------

    async def _run(self, generation: Generation) -> None:
        outcome = _Outcome()
        try:
            with generation.scope:
                generation.scope.deadline = anyio.current_time() + self._settings.llm_total_timeout
                try:
                    await self._converse(generation, outcome)
                    outcome.status = "complete"
                except ChatsvcError as exc:
                    outcome.error = exc
                except Exception:  # this task's one error boundary: log, fail, keep siblings
                    log.exception("generation %s failed", generation.task_id)
                    outcome.error = InternalError("the reply failed on the server")
            if generation.scope.cancelled_caught:
                if generation.abort_requested:
                    outcome.status = "aborted"
                elif generation.interrupt_requested:
                    outcome.status = "interrupted"
                else:
                    outcome.error = GenerationTimeout("the reply took too long")
        except anyio.get_cancelled_exc_class():
            outcome.status = "interrupted"
            raise
        finally:
            if outcome.error is not None:
                outcome.status = "failed"
            await self._finish(generation, outcome)

    async def _request_for(
        self, generation: Generation, budget: int | None = None
    ) -> CompletionRequest:
        """One system message (the prompt, then the tree), then the history that fits the
        budget (characters; by default the model's), ending with the new message.

        One, and first: several chat templates refuse a second system message or one
        that is not first (docs/protocol.md).
        """
        budget = budget or self._budgets.chars(generation.model)
        tree = await self._tree_text(generation.chat_id, budget // 2) if self._trees else None
        system = "\n\n".join(part for part in (generation.system_prompt, tree) if part)
        # The newest message always goes, older ones while they fit; only those are read.
        history = await store.prompt_history(
            generation.chat_id, budget=budget - len(system), leave_out=generation.message_id
        )
        while len(history) > 1 and history[0].role != "user":
            history = history[1:]  # strict templates (Gemma's, Mistral's) want a user turn first
        if history and len(system) + len(history[-1].content) > budget:
            raise ContextOverflow(
                "the message and the chat's system prompt are longer than the model's "
                f"context takes (about {budget // CHARS_PER_TOKEN} tokens); shorten them"
            )
        turns = [ChatTurn(role="system", content=system)]
        turns.extend(ChatTurn(role=turn.role, content=turn.content) for turn in history)
        return CompletionRequest(
            model=generation.model,
            messages=turns,
            temperature=self._settings.llm_temperature,
            max_tokens=self._settings.llm_max_tokens,
            tools=TOOLS if self._trees is not None else None,
        )

    async def _shorter_request(
        self, generation: Generation, request: CompletionRequest, overflow: ChatsvcError
    ) -> CompletionRequest:
        """The request again with about half its older history, after the server found
        it longer than its context (or answered nothing at all, as llama-cpp-python
        does then). Once per reply, before anything was relayed; else ``overflow``."""
        if isinstance(overflow, ContextOverflow) and overflow.context_tokens:
            self._budgets.cap(generation.model, overflow.context_tokens, "stated when it refused")
        if generation.rounds > 1 or generation.seq > 0:
            raise overflow
        system, *history = request.messages
        older = sum(len(turn.content) for turn in history[:-1])
        if not older:
            if isinstance(overflow, ContextOverflow):
                overflow.message = "the message is longer than the model's context; shorten it"
            raise overflow
        newest = len(system.content) + len(history[-1].content)
        budget = min(self._budgets.chars(generation.model), newest + older // 2)
        shorter = await self._request_for(generation, budget)
        log.info(
            "reply %s: %s; trying again with %d of %d earlier messages",
            generation.task_id,
            overflow.message,
            len(shorter.messages) - 2,
            len(history) - 1,
        )
        return shorter

    async def _tree_text(self, chat_id: UUID, room: int) -> str:
        """The chat's tree as the model sees it: node ids are what its tools take."""
        tree = await store.get_tree(chat_id)
        shown = _json_text(tree.root)
        if len(shown) > room:
            shown = "(too large to show here; ask the user which nodes to change)"
        return (
            f"The chat's workspace tree (version {tree.version}); the tree_* tools "
            f"change it and take the nodes' ids:\n{shown}"
        )

    async def _converse(self, generation: Generation, outcome: _Outcome) -> None:
        """Upstream rounds until one ends without tool calls (or the cap on tool rounds)."""
        request = await self._request_for(generation)
        while True:
            said_before = len(generation.parts)
            outcome.finish_reason = None  # the last round's is the reply's
            try:
                calls = await self._relay(generation, request, outcome)
            except (ContextOverflow, EmptyReply) as exc:
                request = await self._shorter_request(generation, request, exc)
                continue
            if not calls or request.tools is None:
                return
            if generation.tool_rounds >= self._settings.max_tool_rounds:
                log.info("reply %s: the model asked for too many tool rounds", generation.task_id)
                outcome.finish_reason = "tool_rounds_exceeded"
                return
            generation.tool_rounds += 1
            said = "".join(generation.parts[said_before:])
            asked = ChatTurn(role="assistant", content=said, tool_calls=calls)
            answers = await self._apply_tools(generation, calls)
            messages = [*request.messages, asked, *answers]
            request = msgspec.structs.replace(request, messages=messages)

    async def _relay(
        self, generation: Generation, request: CompletionRequest, outcome: _Outcome
    ) -> tuple[ToolRequest, ...]:
        """One upstream stream into the reply; the tool calls it ended with."""
        generation.rounds += 1
        if generation.upstream_started_at is None:
            generation.upstream_started_at = anyio.current_time()
        calls: tuple[ToolRequest, ...] = ()
        async with self._provider.stream(request) as deltas:
            async for delta in deltas:
                self._relay_delta(generation, delta, outcome)
                calls += delta.tool_calls
                # A burst read from the socket must not starve the loop: let `abort` in.
                # (asyncio's own zero sleep: a tenth of the CPU of anyio's checkpoint, and
                # the same cancellation point for the scope; uvicorn always runs asyncio.)
                await asyncio.sleep(0)
        return calls

    async def _apply_tools(
        self, generation: Generation, calls: tuple[ToolRequest, ...]
    ) -> list[ChatTurn]:
        """Apply the calls in order, one tree version each; their results, as ``tool`` turns.

        Each call runs shielded (bounded in time): an abort lets the call being
        applied finish, then the checkpoint after it stops every later one.
        """
        assert self._trees is not None
        answers = []
        for call in calls:
            result: dict[str, Any] | None = None
            with anyio.CancelScope(shield=True) as shield:
                shield.deadline = anyio.current_time() + self._settings.shutdown_timeout
                result = await self._trees.apply_tool(
                    generation.chat_id, generation.task_id, ToolCall(call.name, call.arguments)
                )
            if shield.cancelled_caught or result is None:
                raise InternalError("the workspace tree could not be changed in time")
            generation.tool_calls.append(
                {"name": call.name, "arguments": call.arguments, "result": result}
            )
            answers.append(ChatTurn(role="tool", tool_call_id=call.id, content=_json_text(result)))
            await anyio.lowlevel.checkpoint()
        return answers

    async def _save_partial_replies(self) -> None:
        """Every few seconds, save the text of every running reply in one write.

        One transaction for all replies, rather than one per reply, keeps the
        (single-writer) SQLite lock and the PostgreSQL pool free for the writes
        that clients wait for. A crash loses at most this interval of text.
        """
        saved: dict[UUID, int] = {}
        while True:
            await anyio.sleep(self._settings.checkpoint_seconds)
            changed = [g for g in self._by_task.values() if saved.get(g.task_id) != len(g.parts)]
            saved = {g.task_id: len(g.parts) for g in self._by_task.values()}
            if not changed:
                continue
            try:
                await store.checkpoint_replies([(g.message_id, g.content) for g in changed])
            except Exception as exc:  # this task's error boundary: the replies themselves go on
                for generation in changed:  # the next checkpoint saves them
                    saved.pop(generation.task_id, None)
                if isinstance(exc, Overloaded):
                    log.warning("could not save the text of %d replies: %s", len(changed), exc)
                else:
                    log.exception("could not save the partial text of %d replies", len(changed))

    def _relay_delta(self, generation: Generation, delta: Delta, outcome: _Outcome) -> None:
        if delta.reasoning:
            self._publish_next(generation, ReasoningEvent, delta.reasoning)
        if delta.text:
            if generation.first_token_at is None:
                generation.first_token_at = anyio.current_time()
                self._telemetry.first_token_after(generation.first_token_at - generation.started_at)
            generation.parts.append(delta.text)
            self._publish_next(generation, TokenEvent, delta.text)
        if delta.usage is not None:  # every round is billed: the reply's usage is their sum
            before = outcome.usage or Usage(prompt_tokens=None, completion_tokens=None)
            outcome.usage = Usage(
                prompt_tokens=_plus(before.prompt_tokens, delta.usage.prompt_tokens),
                completion_tokens=_plus(before.completion_tokens, delta.usage.completion_tokens),
            )
        if delta.finish_reason is not None:
            outcome.finish_reason = delta.finish_reason

    # --- finish ------------------------------------------------------------------------------

    async def _finish(self, generation: Generation, outcome: _Outcome) -> None:
        """Store the reply once, then announce its end; always leaves the registry."""
        usage = outcome.usage or Usage(prompt_tokens=None, completion_tokens=None)
        try:
            reply = await self._store_end(generation, outcome, usage)
        except anyio.get_cancelled_exc_class():  # stopped while waiting to try again
            generation.finished.set()
            raise
        finally:
            self._unregister(generation)
        generation.error = outcome.error
        if reply is not None:
            generation.reply = message_from_record(reply)
        terminal = self._terminal_frame(generation, outcome)
        if terminal is not None:
            self._publish(generation, self._debug_frame(generation, outcome))
            self._publish(generation, terminal)
        elif outcome.status == "interrupted":  # sockets here are closing; elsewhere they are not
            self._events.publish_remote(
                generation.chat_id,
                event_of(_interrupted_frame(generation.task_id, generation.chat_id)),
            )
        generation.finished.set()
        now = anyio.current_time()
        aborted = outcome.status == "aborted" and generation.abort_requested_at is not None
        self._telemetry.generation_ended(
            status=outcome.status,
            user_id=generation.owner,
            chat_id=generation.chat_id,
            task_id=generation.task_id,
            duration=now - generation.started_at,
            events=generation.seq + 1,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=outcome.finish_reason,
            error_code=generation.error.code if generation.error else None,
            aborted_by=generation.aborted_by if outcome.status == "aborted" else None,
            abort_latency=now - generation.abort_requested_at if aborted else None,  # type: ignore[operator]
        )

    async def _store_end(
        self, generation: Generation, outcome: _Outcome, usage: Usage
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
                    status=outcome.status,
                    content=generation.content,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    finish_reason=outcome.finish_reason,
                    error_code=outcome.error.code if outcome.error else None,
                    tool_calls=generation.tool_calls,
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

    def _publish_next(
        self,
        generation: Generation,
        kind: type[TokenEvent] | type[ReasoningEvent],
        text: str,
    ) -> None:
        """The task's next ``seq``: token and reasoning events share one gapless count."""
        generation.seq += 1
        self._publish(
            generation,
            kind(
                task_id=generation.task_id,
                chat_id=generation.chat_id,
                seq=generation.seq,
                token=text,
            ),
        )

    def _debug_frame(self, generation: Generation, outcome: _Outcome) -> DebugEvent:
        """Timings (ms) and counts of the reply, for the sockets that asked for them."""
        now = anyio.current_time()

        def ms(since: float | None, until: float | None = now) -> float | None:
            if since is None or until is None:
                return None
            return round((until - since) * 1000, 3)

        aborted = outcome.status == "aborted"
        data = {
            "status": outcome.status,
            "duration_ms": ms(generation.started_at),
            "upstream_first_token_ms": ms(
                generation.upstream_started_at, generation.first_token_at
            ),
            "tokens": generation.seq + 1,
            "rounds": generation.rounds,
            "tool_rounds": generation.tool_rounds,
            "tool_calls": len(generation.tool_calls),
            "cancel_latency_ms": ms(generation.abort_requested_at) if aborted else None,
        }
        return DebugEvent(chat_id=generation.chat_id, task_id=generation.task_id, data=data)

    def _terminal_frame(self, generation: Generation, outcome: _Outcome) -> msgspec.Struct | None:
        """``done``, ``aborted`` or ``error`` (none when interrupted: the sockets are closing)."""
        ids = {"task_id": generation.task_id, "chat_id": generation.chat_id}
        reply = generation.reply
        if outcome.status == "complete" and reply is not None:
            return Done(
                **ids, message=reply, usage=outcome.usage, finish_reason=outcome.finish_reason
            )
        if outcome.status == "aborted" and reply is not None:
            return Aborted(**ids, message=reply)
        if outcome.status == "interrupted":
            return None
        generation.error = outcome.error or InternalError("the reply could not be stored")
        return ErrorEvent(
            task_id=generation.task_id,
            chat_id=generation.chat_id,
            code=generation.error.code,
            message=generation.error.message,
        )

    def _publish(self, generation: Generation, frame: msgspec.Struct) -> Event:
        event = event_of(frame)
        self._events.publish(generation.chat_id, event)
        return event


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


def _interrupted_frame(task_id: UUID, chat_id: UUID) -> ErrorEvent:
    return ErrorEvent(
        task_id=task_id,
        chat_id=chat_id,
        code="internal",
        message="the reply was interrupted: the server running it stopped",
    )


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, ChatsvcError) else f"{type(exc).__name__}: {exc}"


def _plus(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _title_from(content: str) -> str:
    first_line = content.strip().splitlines()[0] if content.strip() else "New chat"
    return first_line[:TITLE_CHARS]
