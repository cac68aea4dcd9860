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
import time
from typing import Any, NamedTuple, TypedDict, TypeGuard, cast

import jsonpatch
import jsonpointer
import msgspec

from chatsvc.errors import InvalidPatch


class Node(TypedDict):
    """A node of the tree, as JSON."""

    id: str
    value: str
    children: list[Node]


ROOT_ID = "root"
NODE_KEYS = {"id", "value", "children"}
ID_CHARS = 200


def empty_root() -> Node:
    return {"id": ROOT_ID, "value": "", "children": []}


class Limits(NamedTuple):
    nodes: int
    depth: int
    value_chars: int
    tree_bytes: int  # the tree as JSON
    op_bytes: int  # the JSON of one op's `value` (or of what a `copy` copies)


#: The RFC 6902 operations.
OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


class _Size(NamedTuple):
    """What a JSON value weighs in the tree: nodes (objects), JSON bytes, levels of nodes."""

    nodes: int
    bytes: int
    depth: int


_NOTHING = _Size(0, 0, 0)


def apply(
    root: Node, ops: list[dict[str, Any]], limits: Limits, *, deadline: float | None = None
) -> Node:
    """The tree after ``ops``; ``InvalidPatch`` (and ``root`` untouched) if any op fails."""
    return apply_sized(root, ops, limits, deadline=deadline)[0]


def apply_sized(
    root: Node, ops: list[dict[str, Any]], limits: Limits, *, deadline: float | None = None
) -> tuple[Node, int]:
    """:func:`apply`, with the new tree's size in bytes of JSON (the size it is stored at).

    Each op is weighed before it is applied: one that would take the tree past a
    limit (nodes, depth, bytes) or carries more than ``limits.op_bytes`` is refused
    before anything is built, so a patch can never grow the tree beyond the limits
    on its way (a ``copy`` of the root doubles it). Past ``deadline``
    (``time.monotonic()``), the patch is refused as too slow. The shape rules (ids,
    keys) are checked once, on the result.
    """
    document: dict[str, Any] = {"root": copy.deepcopy(root)}
    total = _weigh(document["root"])
    for number, op in enumerate(ops):
        if deadline is not None and time.monotonic() > deadline:
            raise InvalidPatch(f"the patch takes too long to apply (stopped at op {number})")
        total = _apply_one(document, op, number, total, limits)
    new_root = check(document.get("root"), limits)
    size = len(_encode(new_root))
    if size > limits.tree_bytes:
        raise InvalidPatch(f"the tree would be larger than {limits.tree_bytes} bytes")
    return new_root, size


def _apply_one(
    document: dict[str, Any], op: object, number: int, total: _Size, limits: Limits
) -> _Size:
    """Weigh one op against the limits, then apply it in place; the tree's new weight."""
    if not _is_object(op):
        raise InvalidPatch(f"op {number}: every op is an object")
    name = op.get("op")
    if name not in OPS:
        raise InvalidPatch(f"op {number}: unknown op {name!r} (one of {', '.join(sorted(OPS))})")
    path, source = op.get("path"), op.get("from")
    for pointer in (path, source):
        if pointer is not None and not _in_tree(pointer):
            raise InvalidPatch(f"op {number} ({name} {pointer}): paths start with /root")
    incoming = outgoing = _NOTHING  # what the op puts into the tree, and takes out of it
    if name in ("add", "replace", "test"):
        incoming = _weigh_bounded(op.get("value"), limits.op_bytes, number)
    elif name == "copy":
        incoming = _weigh_bounded(_resolve(document, source, number), limits.op_bytes, number)
    elif name == "move":  # the same nodes, elsewhere: only the depth can change
        incoming = outgoing = _weigh(_resolve(document, source, number))
    if name in ("replace", "remove") or (
        name in ("add", "copy", "move") and _is_key(document, path)
    ):
        outgoing = _plus(outgoing, _weigh(_existing(document, path)))  # a value replaced
    if name != "test":
        nodes = total.nodes + incoming.nodes - outgoing.nodes
        size = total.bytes + incoming.bytes - outgoing.bytes
        if nodes > limits.nodes:
            raise InvalidPatch(f"op {number}: the tree would have more than {limits.nodes} nodes")
        if size > limits.tree_bytes:
            raise InvalidPatch(
                f"op {number}: the tree would be larger than {limits.tree_bytes} bytes"
            )
        if incoming.depth and _level(path) + incoming.depth - 1 > limits.depth:
            raise InvalidPatch(f"op {number}: the tree would be deeper than {limits.depth} levels")
        total = _Size(nodes, size, total.depth)
    try:
        jsonpatch.JsonPatch([op]).apply(document, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise InvalidPatch(f"op {number}: the patch does not apply: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # malformed op values
        raise InvalidPatch(f"op {number}: the patch does not apply: {type(exc).__name__}") from None
    return total


_encode = msgspec.json.encode


def _is_object(value: object) -> TypeGuard[dict[str, Any]]:
    """Whether a JSON value is an object (JSON objects have string keys)."""
    return isinstance(value, dict)


def _is_array(value: object) -> TypeGuard[list[Any]]:
    """Whether a JSON value is an array."""
    return isinstance(value, list)


def _weigh(value: Any) -> _Size:
    """Nodes, JSON bytes and levels of nodes of a value already in the tree (bounded)."""
    if value is None:
        return _NOTHING
    nodes = depth = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if _is_object(item):
            nodes += 1
            depth = max(depth, level + 1)
            stack.extend((child, level + 1) for child in item.values())
        elif _is_array(item):
            stack.extend((child, level) for child in item)
    return _Size(nodes, len(_encode(value)), depth)


def _plus(a: _Size, b: _Size) -> _Size:
    return _Size(a.nodes + b.nodes, a.bytes + b.bytes, max(a.depth, b.depth))


def _weigh_bounded(value: Any, max_bytes: int, number: int) -> _Size:
    """``_weigh`` for a value from outside: refused unweighed when its JSON is too large."""
    try:
        size = len(_encode(value))
    except (TypeError, msgspec.EncodeError, RecursionError) as exc:
        raise InvalidPatch(f"op {number}: the value is not JSON: {type(exc).__name__}") from None
    if size > max_bytes:
        raise InvalidPatch(f"op {number}: the value is larger than {max_bytes} bytes")
    return _weigh(value)


def _resolve(document: Any, pointer: Any, number: int) -> Any:
    """The value at ``pointer``; ``InvalidPatch`` if there is none."""
    try:
        value = jsonpointer.resolve_pointer(document, pointer)
    except (jsonpointer.JsonPointerException, TypeError) as exc:
        raise InvalidPatch(f"op {number}: no value at {pointer}: {exc}") from None
    if isinstance(value, jsonpointer.EndOfList):
        raise InvalidPatch(f"op {number}: no value at {pointer}")
    return value


def _existing(document: Any, pointer: Any) -> Any:
    """The value at ``pointer``, or ``None`` (the op itself then fails as it applies)."""
    try:
        value = jsonpointer.resolve_pointer(document, pointer, None)
    except (jsonpointer.JsonPointerException, TypeError):
        return None
    return None if isinstance(value, jsonpointer.EndOfList) else value


def _is_key(document: Any, pointer: Any) -> bool:
    """Whether ``pointer`` names a key of an object (an ``add`` there replaces its value)."""
    if not isinstance(pointer, str) or "/" not in pointer:
        return False
    parent, _, _ = pointer.rpartition("/")
    try:
        return isinstance(jsonpointer.resolve_pointer(document, parent, None), dict)
    except jsonpointer.JsonPointerException:
        return False


def _in_tree(pointer: Any) -> bool:
    return isinstance(pointer, str) and (pointer == "/root" or pointer.startswith("/root/"))


def _level(pointer: Any) -> int:
    """The level a node placed at ``pointer`` would have (``/root`` is 1)."""
    return pointer.count("/children/") + 1 if isinstance(pointer, str) else 1


def check(root: Any, limits: Limits) -> Node:
    """``root``, if it is a well-formed tree within the limits; else ``InvalidPatch``."""
    if not _is_object(root) or root.get("id") != ROOT_ID:
        raise InvalidPatch("the root must stay a node with id 'root'")
    seen: set[str] = set()
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if not _is_object(node) or set(node) != NODE_KEYS:
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
        if not _is_array(children):
            raise InvalidPatch(f"node {node_id!r}: children must be a list")
        if depth > limits.depth:
            raise InvalidPatch(f"the tree is deeper than {limits.depth} levels")
        if len(seen) + len(stack) + len(children) > limits.nodes:
            raise InvalidPatch(f"the tree has more than {limits.nodes} nodes")
        stack.extend((child, depth + 1) for child in children)
    return cast(Node, root)  # JSON from outside, checked node by node above


# --- the model's tools ------------------------------------------------------------------


class ToolCall(msgspec.Struct, frozen=True):
    """A function call the model asked for; the one type from the provider's stream to here.

    ``id`` is the model's name for the call, which its result (a ``tool`` turn) repeats;
    the tree needs only ``name`` and ``arguments``.
    """

    name: str
    arguments: str  # JSON, as the model wrote it
    id: str = ""


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


_ToolArguments = _Add | _Rename | _Move | _Remove

_ARGUMENTS: dict[str, type[_ToolArguments]] = {
    "tree_add_node": _Add,
    "tree_rename_node": _Rename,
    "tree_move_node": _Move,
    "tree_remove_node": _Remove,
}


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
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
            node: Node = {"id": node_id, "value": args.value, "children": []}
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
