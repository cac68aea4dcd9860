"""The talk with the model for one reply: the request, the relay of each upstream round,
and the tool rounds between them (the workspace tree tools, docs/protocol.md section 5).

``Conversation.converse`` opens upstream streams until one ends without tool calls.
Each delta becomes a ``token`` (or ``reasoning``) event with the reply's next ``seq``.
When a stream ends asking for tool calls, each call is applied in turn
(``Trees.apply_tool``: one version each, ``tree_update`` to every subscriber), then the
calls and their results go back to the model and a new stream continues the same
reply. At most ``MAX_TOOL_ROUNDS`` rounds: one more ends the reply with finish reason
``tool_rounds_exceeded``. A request the server finds too long for its context is sent
again once with about half the older history.

What the reply said (text, reasoning, ``seq``, usage, finish reason, tool calls) is kept on the
``Generation``; how the reply ends is the runner's to decide.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any
from uuid import UUID

import anyio
import anyio.lowlevel
import msgspec

from chatsvc import store
from chatsvc.context import CHARS_PER_TOKEN, ContextBudgets
from chatsvc.errors import ChatsvcError, ContextOverflow, EmptyReply, InternalError
from chatsvc.events import ChatEvents, event_of
from chatsvc.generation import frames
from chatsvc.generation.reply import Generation, Round
from chatsvc.providers import ChatTurn, CompletionRequest, Delta, LLMProvider
from chatsvc.settings import Settings
from chatsvc.telemetry import Telemetry
from chatsvc.tree import TOOLS, ToolCall
from chatsvc.trees import Trees
from chatsvc.wire import ReasoningEvent, TokenEvent

log = logging.getLogger("chatsvc.generation")


class Conversation:
    """Builds a reply's requests and relays the model's answers into it."""

    def __init__(
        self,
        settings: Settings,
        provider: LLMProvider,
        events: ChatEvents,
        telemetry: Telemetry,
        budgets: ContextBudgets,
        trees: Trees | None,
    ) -> None:
        self._settings = settings
        self._provider = provider
        self._events = events
        self._telemetry = telemetry
        self._budgets = budgets
        #: Without ``trees`` the model is offered no tools.
        self._trees = trees

    def check_fits(self, content: str, models: Collection[str]) -> None:
        """Refuse, before it is stored, a message that none of ``models``' contexts can take.
        (The chat's own model is checked again when the request is built.)"""
        room = max(self._budgets.chars(model) for model in models)
        if len(content) > room:
            raise ContextOverflow(
                f"content: about {len(content) // CHARS_PER_TOKEN} tokens, more than the "
                f"model's context takes ({room // CHARS_PER_TOKEN}); shorten it"
            )

    async def converse(self, generation: Generation) -> None:
        """Upstream rounds until one ends without tool calls (or the cap on tool rounds)."""
        request = await self._request_for(generation)
        while True:
            said_before = len(generation.parts)
            generation.finish_reason = None  # the last round's is the reply's
            try:
                calls = await self._relay(generation, request)
            except (ContextOverflow, EmptyReply) as exc:
                request = await self._shorter_request(generation, request, exc)
                continue
            if not calls or request.tools is None:
                return
            if generation.tool_rounds >= self._settings.max_tool_rounds:
                log.info("reply %s: the model asked for too many tool rounds", generation.task_id)
                generation.finish_reason = "tool_rounds_exceeded"
                return
            generation.tool_rounds += 1
            said = "".join(generation.parts[said_before:])
            asked = ChatTurn(role="assistant", content=said, tool_calls=calls)
            answers = await self._apply_tools(generation, calls)
            messages = [*request.messages, asked, *answers]
            request = msgspec.structs.replace(request, messages=messages)

    # --- requests ----------------------------------------------------------------------------

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
        if generation.question_id is None:
            raise InternalError("the reply has no message to answer")
        history = await store.prompt_history(
            generation.chat_id, leaf=generation.question_id, budget=budget - len(system)
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
            temperature=generation.temperature,
            top_p=generation.top_p,
            max_tokens=generation.max_tokens,
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

    # --- one round ---------------------------------------------------------------------------

    async def _relay(
        self, generation: Generation, request: CompletionRequest
    ) -> tuple[ToolCall, ...]:
        """One upstream stream into the reply; the tool calls it ended with."""
        generation.rounds += 1
        if generation.upstream_started_at is None:
            generation.upstream_started_at = anyio.current_time()
        calls: tuple[ToolCall, ...] = ()
        said = Round()
        try:
            async with self._provider.stream(request) as deltas:
                said.accepted = True
                async for delta in deltas:
                    self._take(generation, delta, said)
                    calls += delta.tool_calls
                    # A burst read from the socket must not starve the loop: let `abort` in.
                    # (asyncio's own zero sleep: a tenth of the CPU of anyio's checkpoint, and
                    # the same cancellation point for the scope; uvicorn always runs asyncio.)
                    await asyncio.sleep(0)
        except (ContextOverflow, EmptyReply):
            said.accepted = False  # refused as too long: asked again shorter, nothing billed
            raise
        finally:
            # Every round the server accepted is billed, however it ended (an abort too):
            # the reply's usage is their sum, each figure the server's or else an estimate.
            if said.accepted:
                generation.count(said, request)
        return calls

    def _take(self, generation: Generation, delta: Delta, said: Round) -> None:
        """One delta into the reply: its events, its text, its usage and finish reason."""
        if delta.reasoning:
            generation.thoughts.append(delta.reasoning)
            said.chars += len(delta.reasoning)
            self._publish_next(generation, ReasoningEvent, delta.reasoning)
        if delta.text:
            if generation.first_token_at is None:
                generation.first_token_at = anyio.current_time()
                self._telemetry.first_token_after(generation.first_token_at - generation.started_at)
            generation.parts.append(delta.text)
            said.chars += len(delta.text)
            self._publish_next(generation, TokenEvent, delta.text)
        said.chars += sum(len(call.name) + len(call.arguments) for call in delta.tool_calls)
        if delta.usage is not None:
            # The round's figures: a server that repeats them (vLLM's continuous usage
            # stats) sends running totals, so the last ones count.
            said.reported = delta.usage
        if delta.finish_reason is not None:
            generation.finish_reason = delta.finish_reason

    def _publish_next(
        self,
        generation: Generation,
        kind: type[TokenEvent] | type[ReasoningEvent],
        text: str,
    ) -> None:
        """The task's next ``seq``: token and reasoning events share one gapless count."""
        generation.seq += 1
        self._events.publish(generation.chat_id, event_of(frames.text(generation, kind, text)))

    # --- tool rounds -------------------------------------------------------------------------

    async def _apply_tools(
        self, generation: Generation, calls: tuple[ToolCall, ...]
    ) -> list[ChatTurn]:
        """Apply the calls in order, one tree version each; their results, as ``tool`` turns.

        Each call runs shielded (bounded in time): an abort lets the call being
        applied finish, then the checkpoint after it stops every later one.
        """
        assert self._trees is not None
        answers: list[ChatTurn] = []
        for call in calls:
            result: dict[str, Any] | None = None
            with anyio.CancelScope(shield=True) as shield:
                shield.deadline = anyio.current_time() + self._settings.shutdown_timeout
                result = await self._trees.apply_tool(generation.chat_id, generation.task_id, call)
            if shield.cancelled_caught or result is None:
                raise InternalError("the workspace tree could not be changed in time")
            generation.tool_calls.append(
                {"name": call.name, "arguments": call.arguments, "result": result}
            )
            answers.append(ChatTurn(role="tool", tool_call_id=call.id, content=_json_text(result)))
            await anyio.lowlevel.checkpoint()
        return answers


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()
