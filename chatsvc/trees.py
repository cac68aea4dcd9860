"""Use cases of a chat's workspace tree: read it, patch it (a user), apply a tool (the model).

Every change goes through ``tree.apply`` (the rules) and ``store.save_tree``
(a version check in the database), then is published as ``tree_update`` to
every subscriber of the chat, on every instance.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import msgspec

from chatsvc import store
from chatsvc.errors import InvalidPatch, NotFound, StaleVersion
from chatsvc.events import ChatEvents, event_of
from chatsvc.settings import Settings
from chatsvc.tree import Limits, ToolCall, apply, tool_patch
from chatsvc.wire import PatchOperation, Tree, TreeNode, TreePatch, TreeUpdate

log = logging.getLogger("chatsvc.trees")

#: A tool call retries this often when another change lands between its read and write.
TOOL_ATTEMPTS = 5


class Trees:
    def __init__(self, settings: Settings, events: ChatEvents) -> None:
        self._events = events
        self.limits = Limits(
            nodes=settings.tree_max_nodes,
            depth=settings.tree_max_depth,
            value_chars=settings.tree_max_value_chars,
        )

    async def get(self, owner: int, chat_id: UUID) -> Tree:
        await self._check_owner(owner, chat_id)
        row = await store.get_tree(chat_id)
        return _tree(chat_id, row["version"], row["root"])

    async def patch(self, owner: int, chat_id: UUID, change: TreePatch) -> Tree:
        """Apply a user's patch against ``change.version``: all of it, or nothing."""
        await self._check_owner(owner, chat_id)
        row = await store.get_tree(chat_id)
        if row["version"] != change.version:
            raise StaleVersion(f"the tree is at version {row['version']}, not {change.version}")
        ops = msgspec.to_builtins(change.ops)
        root = apply(row["root"], ops, self.limits)
        version = await store.save_tree(chat_id, change.version, root)
        if version is None:
            raise StaleVersion("the tree changed meanwhile; fetch it again")
        self._publish(chat_id, version, change.ops, source="user", task_id=None)
        return _tree(chat_id, version, root)

    async def apply_tool(self, chat_id: UUID, task_id: UUID, call: ToolCall) -> dict[str, Any]:
        """Do what a model's tool call asks, as one new version; the tool's result.

        An invalid call changes nothing and answers ``{"ok": false, "error"}``.
        """
        for _ in range(TOOL_ATTEMPTS):
            row = await store.get_tree(chat_id)
            try:
                ops, node_id = tool_patch(row["root"], call)
                root = apply(row["root"], ops, self.limits)
            except InvalidPatch as exc:
                return {"ok": False, "error": exc.message}
            version = await store.save_tree(chat_id, row["version"], root)
            if version is not None:
                changes = msgspec.convert(ops, list[PatchOperation])
                self._publish(chat_id, version, changes, source="assistant", task_id=task_id)
                return {"ok": True, "version": version, "id": node_id}
        log.warning("tool call on chat %s lost %d races for the tree", chat_id, TOOL_ATTEMPTS)
        return {"ok": False, "error": "the tree kept changing; try again"}

    async def _check_owner(self, owner: int, chat_id: UUID) -> None:
        if await store.get_chat(owner, chat_id) is None:
            raise NotFound("chat not found")

    def _publish(
        self,
        chat_id: UUID,
        version: int,
        ops: list[PatchOperation],
        *,
        source: str,
        task_id: UUID | None,
    ) -> None:
        update = TreeUpdate(
            chat_id=chat_id, version=version, ops=ops, source=source, task_id=task_id
        )  # type: ignore[arg-type]
        self._events.publish(chat_id, event_of(update))


def _tree(chat_id: UUID, version: int, root: dict[str, Any]) -> Tree:
    return Tree(chat_id=chat_id, version=version, root=msgspec.convert(root, TreeNode))
