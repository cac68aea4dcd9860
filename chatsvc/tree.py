"""The workspace tree of a chat: applying a change, all or nothing, within the limits.

A tree is plain JSON: the root node ``{"id": "root", "value": "", "children": []}``,
each node ``{"id", "value", "children"}`` with ids unique in the tree. Changes
are RFC 6902 JSON Patches against the document ``{"root": node}``, applied by
the ``jsonpatch`` library; this module adds the tree's own rules (shape,
unique ids, node count, depth, value length) on top, and turns the model's four
tools (``TOOLS``: their schemas as offered to the model) into patches. Nothing
here touches the database: ``trees.py`` stores a change with a version check.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any, NamedTuple

import jsonpatch
import jsonpointer
import msgspec

from chatsvc.errors import InvalidPatch

Node = dict[str, Any]
ROOT_ID = "root"
NODE_KEYS = {"id", "value", "children"}
ID_CHARS = 200


def empty_root() -> Node:
    return {"id": ROOT_ID, "value": "", "children": []}


class Limits(NamedTuple):
    nodes: int
    depth: int
    value_chars: int


def apply(root: Node, ops: list[dict[str, Any]], limits: Limits) -> Node:
    """The tree after ``ops``; ``InvalidPatch`` (and ``root`` untouched) if any op fails."""
    for op in ops:
        if not isinstance(op, dict):
            raise InvalidPatch("every op is an object")
        for pointer in (op.get("path"), op.get("from")):
            if pointer is None:
                continue
            if not isinstance(pointer, str) or (
                pointer != "/root" and not pointer.startswith("/root/")
            ):
                raise InvalidPatch(f"{op.get('op')} {pointer}: paths start with /root")
    try:
        document = jsonpatch.apply_patch({"root": root}, ops, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise InvalidPatch(f"the patch does not apply: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # malformed op values
        raise InvalidPatch(f"the patch does not apply: {type(exc).__name__}") from None
    new_root = document.get("root")
    check(new_root, limits)
    return new_root


def check(root: Any, limits: Limits) -> None:
    """Raise ``InvalidPatch`` unless ``root`` is a well-formed tree within the limits."""
    if not isinstance(root, dict) or root.get("id") != ROOT_ID:
        raise InvalidPatch("the root must stay a node with id 'root'")
    seen: set[str] = set()
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict) or set(node) != NODE_KEYS:
            raise InvalidPatch("every node is exactly {id, value, children}")
        node_id, value, children = node["id"], node["value"], node["children"]
        if not isinstance(node_id, str) or not 0 < len(node_id) <= ID_CHARS or "\x00" in node_id:
            raise InvalidPatch(f"a node id is a string of 1-{ID_CHARS} characters")
        if node_id in seen:
            raise InvalidPatch(f"node id {node_id!r} is used twice")
        seen.add(node_id)
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidPatch(f"node {node_id!r}: value must be a string")
        if len(value) > limits.value_chars:
            raise InvalidPatch(f"node {node_id!r}: value longer than {limits.value_chars}")
        if not isinstance(children, list):
            raise InvalidPatch(f"node {node_id!r}: children must be a list")
        if depth > limits.depth:
            raise InvalidPatch(f"the tree is deeper than {limits.depth} levels")
        if len(seen) + len(stack) + len(children) > limits.nodes:
            raise InvalidPatch(f"the tree has more than {limits.nodes} nodes")
        stack.extend((child, depth + 1) for child in children)


# --- the model's tools ------------------------------------------------------------------


class ToolCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str  # JSON, as the model wrote it


class _Add(msgspec.Struct, forbid_unknown_fields=True):
    parent_id: str
    value: str
    id: str | None = None


class _Rename(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    value: str


class _Move(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    parent_id: str
    index: int | None = None


class _Remove(msgspec.Struct, forbid_unknown_fields=True):
    id: str


_ARGUMENTS: dict[str, type[msgspec.Struct]] = {
    "tree_add_node": _Add,
    "tree_rename_node": _Rename,
    "tree_move_node": _Move,
    "tree_remove_node": _Remove,
}


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_NODE_ID = {"type": "string", "description": "The id of an existing node; the root's is 'root'."}

#: The four tools as offered to an OpenAI-compatible model (``tools`` of a chat completion):
#: one entry per argument struct above, same names and fields.
TOOLS: list[dict[str, Any]] = [
    _tool(
        "tree_add_node",
        "Add a node to the chat's workspace tree, as the last child of `parent_id`. "
        "Returns the new node's id and the tree's new version.",
        {
            "parent_id": _NODE_ID,
            "value": {"type": "string", "description": "The text of the new node."},
            "id": {
                "type": "string",
                "description": "Optional id for the new node (unique in the tree); "
                "leave it out and the server makes one.",
            },
        },
        ["parent_id", "value"],
    ),
    _tool(
        "tree_rename_node",
        "Replace the text of a node of the workspace tree.",
        {"id": _NODE_ID, "value": {"type": "string", "description": "The node's new text."}},
        ["id", "value"],
    ),
    _tool(
        "tree_move_node",
        "Move a node (with its subtree) under another parent of the workspace tree.",
        {
            "id": _NODE_ID,
            "parent_id": {
                **_NODE_ID,
                "description": "The new parent; not the node itself nor one of its descendants.",
            },
            "index": {
                "type": "integer",
                "minimum": 0,
                "description": "Position among the new parent's children (0 is first); "
                "leave it out to append.",
            },
        },
        ["id", "parent_id"],
    ),
    _tool(
        "tree_remove_node",
        "Remove a node and its whole subtree from the workspace tree (not the root).",
        {"id": _NODE_ID},
        ["id"],
    ),
]


def tool_patch(root: Node, call: ToolCall) -> tuple[list[dict[str, Any]], str]:
    """The patch that does what the tool call asks, and the id of the node acted on.

    ``InvalidPatch`` for an unknown tool, malformed arguments or unknown ids.
    """
    kind = _ARGUMENTS.get(call.name)
    if kind is None:
        raise InvalidPatch(f"unknown tool {call.name!r}")
    try:
        args = msgspec.json.decode(call.arguments or "{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidPatch(f"bad arguments: {exc}") from None
    paths = _paths(root)
    match args:
        case _Add():
            parent = _path_of(paths, args.parent_id)
            node_id = args.id or _new_id(paths)
            node = {"id": node_id, "value": args.value, "children": []}
            return [{"op": "add", "path": f"{parent}/children/-", "value": node}], node_id
        case _Rename():
            return [
                {"op": "replace", "path": f"{_path_of(paths, args.id)}/value", "value": args.value}
            ], args.id
        case _Move():
            source = _path_of(paths, args.id)
            parent = _path_of(paths, args.parent_id)
            if args.id == ROOT_ID:
                raise InvalidPatch("the root cannot be moved")
            if parent == source or parent.startswith(source + "/"):
                raise InvalidPatch("a node cannot move under itself")
            return _move_ops(root, source, parent, args.index), args.id
        case _Remove():
            if args.id == ROOT_ID:
                raise InvalidPatch("the root cannot be removed")
            return [{"op": "remove", "path": _path_of(paths, args.id)}], args.id
    raise InvalidPatch(f"unknown tool {call.name!r}")  # pragma: no cover (exhaustive)


def _move_ops(root: Node, source: str, parent: str, index: int | None) -> list[dict[str, Any]]:
    """A remove then an add (``move`` with an index shifts when source and target share a
    parent, so spell it out against the tree as it will be after the removal)."""
    node = jsonpointer.resolve_pointer({"root": root}, source)
    removed = jsonpatch.apply_patch({"root": root}, [{"op": "remove", "path": source}])
    siblings = jsonpointer.resolve_pointer(removed, f"{_reparent(parent, source)}/children")
    position = len(siblings) if index is None else index
    if not 0 <= position <= len(siblings):
        raise InvalidPatch(f"index {index} is out of range 0-{len(siblings)}")
    target = f"{_reparent(parent, source)}/children/{position}"
    return [
        {"op": "remove", "path": source},
        {"op": "add", "path": target, "value": copy.deepcopy(node)},
    ]


def _reparent(parent: str, source: str) -> str:
    """``parent``'s pointer once ``source`` has been removed (an earlier sibling shifts it)."""
    source_parent, _, source_index = source.rpartition("/")
    if not parent.startswith(source_parent + "/"):
        return parent
    rest = parent[len(source_parent) + 1 :]
    head, sep, tail = rest.partition("/")
    if head.isdigit() and int(head) > int(source_index):
        return f"{source_parent}/{int(head) - 1}{sep}{tail}"
    return parent


def _paths(root: Node) -> dict[str, str]:
    """Node id -> JSON pointer in the ``{"root": ...}`` document."""
    paths: dict[str, str] = {}
    stack = [(root, "/root")]
    while stack:
        node, path = stack.pop()
        paths[node["id"]] = path
        stack.extend((child, f"{path}/children/{i}") for i, child in enumerate(node["children"]))
    return paths


def _path_of(paths: dict[str, str], node_id: str) -> str:
    path = paths.get(node_id)
    if path is None:
        raise InvalidPatch(f"no node with id {node_id!r}")
    return path


def _new_id(paths: dict[str, str]) -> str:
    while True:
        node_id = f"n{secrets.token_hex(4)}"
        if node_id not in paths:
            return node_id
