"""Use cases of a chat's workspace tree: read it, patch it (a user), apply a tool (the model).

Every change goes through ``tree.apply_sized`` (the rules) and ``store.save_tree``
(a version check in the database), then is published as ``tree_update`` to
every subscriber of the chat, on every instance.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, cast
from uuid import UUID

import anyio
import jsonpatch
import msgspec

from chatsvc import store
from chatsvc.errors import InvalidPatch, LimitReached, NotFound, StaleVersion
from chatsvc.events import ChatEvents, event_of
from chatsvc.records import TreeRecord
from chatsvc.settings import Settings
from chatsvc.tree import Limits, Node, ToolCall, apply_sized, tool_patch
from chatsvc.wire import PatchOperation, Tree, TreeNode, TreePatch, TreeUpdate

log = logging.getLogger("chatsvc.trees")

#: A tool call retries this often when another change lands between its read and write.
TOOL_ATTEMPTS = 5
#: A change is refused when applying it takes longer than this (it runs in a worker thread,
#: one change at a time, so the event loop keeps serving everyone meanwhile).
APPLY_SECONDS = 1.0


class Trees:
    def __init__(self, settings: Settings, events: ChatEvents) -> None:
        self._events = events
        self.limits = Limits(
            nodes=settings.tree_max_nodes,
            depth=settings.tree_max_depth,
            value_chars=settings.tree_max_value_chars,
            tree_bytes=settings.tree_max_bytes,
            op_bytes=settings.tree_op_max_bytes,
        )
        self._owner_cap = settings.tree_max_bytes_per_user
        # One change at a time off the loop: a thread per request would crowd it out.
        self._worker = anyio.CapacityLimiter(1)

    async def get(self, owner: int, chat_id: UUID) -> Tree:
        await self._check_owner(owner, chat_id)
        tree = await store.get_tree(chat_id)
        return _tree(chat_id, tree.version, _root(tree))

    async def patch(self, owner: int, chat_id: UUID, change: TreePatch) -> Tree:
        """Apply a user's patch against ``change.version``: all of it, or nothing."""
        await self._check_owner(owner, chat_id)
        tree = await store.get_tree(chat_id)
        if tree.version != change.version:
            raise StaleVersion(f"the tree is at version {tree.version}, not {change.version}")
        ops = msgspec.to_builtins(change.ops)
        root, applied, size = await self._apply(_root(tree), ops)
        version = await store.save_tree(
            chat_id, change.version, root, size=size, owner_cap=self._owner_cap
        )
        if version is None:
            raise StaleVersion("the tree changed meanwhile; fetch it again")
        self._publish(chat_id, version, applied, source="user", task_id=None)
        return _tree(chat_id, version, root)

    async def apply_tool(self, chat_id: UUID, task_id: UUID, call: ToolCall) -> dict[str, Any]:
        """Do what a model's tool call asks, as one new version; the tool's result.

        An invalid call changes nothing and answers ``{"ok": false, "error"}``.
        """
        for _ in range(TOOL_ATTEMPTS):
            tree = await store.get_tree(chat_id)
            try:
                ops, node_id = tool_patch(_root(tree), call)
                root, applied, size = await self._apply(_root(tree), ops)
                version = await store.save_tree(
                    chat_id, tree.version, root, size=size, owner_cap=self._owner_cap
                )
            except (InvalidPatch, LimitReached) as exc:
                return {"ok": False, "error": exc.message}
            if version is not None:
                self._publish(chat_id, version, applied, source="assistant", task_id=task_id)
                return {"ok": True, "version": version, "id": node_id}
        log.warning("tool call on chat %s lost %d races for the tree", chat_id, TOOL_ATTEMPTS)
        return {"ok": False, "error": "the tree kept changing; try again"}

    async def _apply(
        self, root: Node, ops: list[dict[str, Any]]
    ) -> tuple[Node, list[PatchOperation], int]:
        """The new tree, the change as applied and the tree's bytes, worked out in a worker
        thread."""
        async with self._worker:  # the deadline starts once it is this change's turn
            deadline = time.monotonic() + APPLY_SECONDS
            return await anyio.to_thread.run_sync(_changed, root, ops, self.limits, deadline)

    async def _check_owner(self, owner: int, chat_id: UUID) -> None:
        if await store.get_chat(owner, chat_id) is None:
            raise NotFound("chat not found")

    def _publish(
        self,
        chat_id: UUID,
        version: int,
        ops: list[PatchOperation],
        *,
        source: Literal["assistant", "user"],
        task_id: UUID | None,
    ) -> None:
        update = TreeUpdate(
            chat_id=chat_id, version=version, ops=ops, source=source, task_id=task_id
        )
        self._events.publish(chat_id, event_of(update))


def _root(tree: TreeRecord) -> Node:
    """The stored tree's root: JSON from the database, only ever written by ``apply_sized``."""
    return cast(Node, tree.root)


def _tree(chat_id: UUID, version: int, root: Node) -> Tree:
    return Tree(chat_id=chat_id, version=version, root=msgspec.convert(root, TreeNode))


def _changed(
    root: Node, ops: list[dict[str, Any]], limits: Limits, deadline: float
) -> tuple[Node, list[PatchOperation], int]:
    """The tree after ``ops`` and the normalised change subscribers get: the difference
    between the two trees, not the ops as sent (which may add and remove large values)."""
    new_root, size = apply_sized(root, ops, limits, deadline=deadline)
    before, after = {"root": root}, {"root": new_root}
    diff = jsonpatch.make_patch(before, after).patch
    if jsonpatch.apply_patch(before, diff) != after:  # a diff must rebuild the tree exactly
        diff = [{"op": "replace", "path": "/root", "value": new_root}]
    return new_root, msgspec.convert(diff, list[PatchOperation]), size
