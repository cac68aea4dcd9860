"""``EchoProvider``: the built-in stand-in used when no upstream is configured.

It repeats the user's words. It is not an LLM, and the start banner says so. Its
``/tree ...`` commands stand in for a model's tool calls (see the class).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec

from chatsvc.providers.port import CircuitState, CompletionRequest, Delta, StatedContext
from chatsvc.titles import placeholder
from chatsvc.tree import ToolCall
from chatsvc.wire import Usage

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
        case _:
            pass
    raise ValueError("usage: " + " | ".join(TREE_COMMANDS))


class _ToolResult(msgspec.Struct):
    """What a tool call's result says (``Generations`` writes it)."""

    ok: Any = False
    id: Any = None
    version: Any = None
    error: Any = None


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
        result = msgspec.json.decode(result_turn.content, type=_ToolResult)
    except msgspec.DecodeError:  # and ValidationError: no object
        result = _ToolResult()
    if result.ok:
        return f"Done: {verb} node {result.id} (version {result.version})."
    return f"Not done: the node could not be {verb}: {result.error or 'no result'}."


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
    async def stream(self, request: CompletionRequest) -> AsyncGenerator[AsyncIterator[Delta]]:
        yield self._deltas(request)

    async def title(self, model: str, question: str, answer: str) -> str:
        """The first words of the question: the title a chat gets before its reply."""
        return placeholder(question)

    async def _deltas(self, request: CompletionRequest) -> AsyncIterator[Delta]:
        prompt = sum(len(_WORDS.findall(turn.content)) for turn in request.messages)
        call = _echo_tool_call(request)
        if call is not None:
            await anyio.sleep(self.token_delay)
            usage = Usage(prompt_tokens=prompt, completion_tokens=1)
            yield Delta(tool_calls=(call,), usage=usage, finish_reason="tool_calls")
            return
        tokens = _echo_answer(request)
        for token in tokens:
            await anyio.sleep(self.token_delay)
            yield Delta(text=token)
        usage = Usage(prompt_tokens=prompt, completion_tokens=len(tokens))
        yield Delta(usage=usage, finish_reason="stop")


def _echo_tool_call(request: CompletionRequest) -> ToolCall | None:
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
    return ToolCall(id=f"call_{len(request.messages)}", name=name, arguments=arguments_json)


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
