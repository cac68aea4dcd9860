"""Property tests of the workspace tree's rules (``chatsvc/tree.py``), with hypothesis.

Pure Python, no server. The trees, patches and tool calls are generated from a
random tree within random (small) limits, next to an independent model of what
each change should do (plain list surgery, no JSON Patch library):

- valid patches (add, replace a value or a node, remove, move, copy a subtree
  under fresh ids, test) keep every invariant, give the model's tree, and give
  the same tree whether applied at once or step by step;
- invalid patches (a bad op slipped into a valid one) raise ``InvalidPatch`` and
  leave the input as it was; random wire-shaped ops either apply to a valid
  tree or raise ``InvalidPatch``, never anything else;
- valid tool calls become patches that ``apply`` accepts, with the model's
  result; invalid ones raise ``InvalidPatch`` (from ``tool_patch``, or from
  ``apply`` when only the limits or the ids' uniqueness break).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chatsvc.errors import InvalidPatch
from chatsvc.tree import (
    ID_CHARS,
    NODE_KEYS,
    ROOT_ID,
    Limits,
    ToolCall,
    apply,
    check,
    empty_root,
    tool_patch,
)

Node = dict[str, Any]
Ops = list[dict[str, Any]]
Draw = Callable[[st.SearchStrategy[Any]], Any]

PROPS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- an independent model of the tree ----------------------------------------------------


def walk(root: Node) -> Iterator[tuple[Node, str, int]]:
    """Every node with its pointer and depth (the root is at depth 1), in pre-order."""
    stack = [(root, "/root", 1)]
    while stack:
        node, path, depth = stack.pop()
        yield node, path, depth
        children = node["children"]
        for index in reversed(range(len(children))):
            stack.append((children[index], f"{path}/children/{index}", depth + 1))


def size(node: Node) -> int:
    return sum(1 for _ in walk(node))


def height(node: Node) -> int:
    return max(depth for _, _, depth in walk(node))


def ids_of(root: Node) -> set[str]:
    return {node["id"] for node, _, _ in walk(root)}


def at(root: Node, path: str) -> Node:
    """The node at a pointer ``/root/children/i/children/j...``."""
    node = root
    parts = path.split("/")[2:]
    for key, index in zip(parts[::2], parts[1::2], strict=True):
        assert key == "children"
        node = node["children"][int(index)]
    return node


def parent_and_index(path: str) -> tuple[str, int]:
    parent, _, index = path.rpartition("/children/")
    return parent, int(index)


def detach(root: Node, path: str) -> Node:
    parent, index = parent_and_index(path)
    return at(root, parent)["children"].pop(index)


def assert_invariants(root: Any, limits: Limits) -> None:
    """The tree rules, checked without ``chatsvc.tree``."""
    assert isinstance(root, dict)
    assert root["id"] == ROOT_ID
    seen: list[str] = []
    for node, _, depth in walk(root):
        assert set(node) == {"id", "value", "children"}
        assert isinstance(node["id"], str)
        assert 0 < len(node["id"]) <= ID_CHARS
        assert "\x00" not in node["id"]
        assert isinstance(node["value"], str)
        assert len(node["value"]) <= limits.value_chars
        assert "\x00" not in node["value"]
        assert isinstance(node["children"], list)
        assert depth <= limits.depth
        seen.append(node["id"])
    assert len(seen) == len(set(seen)), "ids are unique"
    assert len(seen) <= limits.nodes
    check(root, limits)  # and the module's own check agrees


# --- strategies -----------------------------------------------------------------------------

#: Text as JSON over UTF-8 can carry it: no NUL (the tree refuses it), no lone surrogate.
chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
texts = st.text(chars, max_size=12)
limits_st = st.builds(
    Limits,
    nodes=st.integers(1, 30),
    depth=st.integers(1, 6),
    value_chars=st.integers(1, 12),
    tree_bytes=st.just(1_000_000),  # the byte limits have their own tests
    op_bytes=st.just(1_000_000),
)


def value_for(draw: Draw, limits: Limits) -> str:
    return draw(st.text(chars, max_size=limits.value_chars))


def fresh_id(draw: Draw, used: set[str]) -> str:
    """An id in no node of ``used`` (which it joins), often with odd characters."""
    node_id = draw(st.text(chars, min_size=1, max_size=8))
    while node_id in used:
        node_id = f"{node_id}~{len(used)}"
    used.add(node_id)
    return node_id


def leaf(node_id: str, value: str = "") -> Node:
    return {"id": node_id, "value": value, "children": []}


@st.composite
def trees(draw: Draw, limits: Limits) -> Node:
    root = empty_root()
    root["value"] = value_for(draw, limits)
    used = {ROOT_ID}
    for _ in range(draw(st.integers(0, limits.nodes - 1))):
        parents = [node for node, _, depth in walk(root) if depth < limits.depth]
        if not parents:
            break
        parent = draw(st.sampled_from(parents))
        index = draw(st.integers(0, len(parent["children"])))
        parent["children"].insert(index, leaf(fresh_id(draw, used), value_for(draw, limits)))
    return root


def position(draw: Draw, parent_path: str, children: int) -> tuple[str, int]:
    """A pointer to insert at among ``children`` siblings (``-`` sometimes), and the index."""
    index = draw(st.integers(0, children))
    if index == children and draw(st.booleans()):
        return f"{parent_path}/children/-", index
    return f"{parent_path}/children/{index}", index


# --- valid changes, each with the model's result ---------------------------------------------

STEPS = ("add", "value", "node", "remove", "move", "copy_value", "copy_subtree", "test")


def valid_step(draw: Draw, state: Node, limits: Limits) -> tuple[Ops, Node]:
    """A valid patch step on ``state`` and the tree after it (``state`` is not changed)."""
    new = copy.deepcopy(state)
    nodes = list(walk(new))
    non_root = nodes[1:]
    used = ids_of(new)
    kind = draw(st.sampled_from(STEPS))
    event(f"step {kind}")
    if kind == "add" and len(nodes) < limits.nodes:
        parents = [(n, p) for n, p, d in nodes if d < limits.depth]
        if parents:
            parent, parent_path = draw(st.sampled_from(parents))
            child = leaf(fresh_id(draw, used), value_for(draw, limits))
            path, index = position(draw, parent_path, len(parent["children"]))
            parent["children"].insert(index, copy.deepcopy(child))
            return [{"op": "add", "path": path, "value": child}], new
    if kind == "node" and non_root:
        node, path, _ = draw(st.sampled_from(non_root))
        replacement = leaf(fresh_id(draw, used - ids_of(node)), value_for(draw, limits))
        parent, index = parent_and_index(path)
        at(new, parent)["children"][index] = copy.deepcopy(replacement)
        return [{"op": "replace", "path": path, "value": replacement}], new
    if kind == "remove" and non_root:
        _, path, _ = draw(st.sampled_from(non_root))
        detach(new, path)
        return [{"op": "remove", "path": path}], new
    if kind == "move" and non_root:
        node, source, _ = draw(st.sampled_from(non_root))
        moved = detach(new, source)
        # RFC 6902: "from" must not be a proper prefix of "path"; the target is read
        # once the node is gone. The node's old parent is always a candidate.
        targets = [
            (n, p)
            for n, p, d in walk(new)
            if d + height(moved) <= limits.depth and not (p + "/").startswith(source + "/")
        ]
        target, target_path = draw(st.sampled_from(targets))
        path, index = position(draw, target_path, len(target["children"]))
        target["children"].insert(index, moved)
        return [{"op": "move", "from": source, "path": path}], new
    if kind == "copy_value":
        source, source_path, _ = draw(st.sampled_from(nodes))
        target, target_path, _ = draw(st.sampled_from(nodes))
        target["value"] = source["value"]
        return [{"op": "copy", "from": f"{source_path}/value", "path": f"{target_path}/value"}], new
    if kind == "copy_subtree":
        node, source, _ = draw(st.sampled_from(nodes))
        targets = [(n, p) for n, p, d in nodes if d + height(node) <= limits.depth]
        if targets and len(nodes) + size(node) <= limits.nodes:
            clone = copy.deepcopy(node)
            target, target_path = draw(st.sampled_from(targets))
            path, index = position(draw, target_path, len(target["children"]))
            ops: Ops = [{"op": "copy", "from": source, "path": path}]
            # The copy repeats every id of the subtree: give each copied node a fresh one.
            # (In between, the tree breaks the rules: only the patch's end counts.)
            for copied, relative, _ in walk(clone):
                copied["id"] = fresh_id(draw, used)
                pointer = f"{target_path}/children/{index}{relative.removeprefix('/root')}"
                ops.append({"op": "replace", "path": f"{pointer}/id", "value": copied["id"]})
            target["children"].insert(index, clone)
            return ops, new
    if kind == "test":
        node, path, _ = draw(st.sampled_from(nodes))
        checked = draw(st.sampled_from(["", "/id", "/value", "/children"]))
        value = node if not checked else node[checked[1:]]
        return [{"op": "test", "path": f"{path}{checked}", "value": copy.deepcopy(value)}], new
    # The kind drawn does not fit this tree: a new value always does.
    node, path, _ = draw(st.sampled_from(nodes))
    node["value"] = value_for(draw, limits)
    return [{"op": "replace", "path": f"{path}/value", "value": node["value"]}], new


@st.composite
def valid_patches(draw: Draw) -> tuple[Limits, Node, list[Ops], Node]:
    limits = draw(limits_st)
    root = draw(trees(limits))
    state, steps = root, []
    for _ in range(draw(st.integers(1, 6))):
        ops, state = valid_step(draw, state, limits)
        steps.append(ops)
    return limits, root, steps, state


@PROPS
@given(valid_patches())
def test_valid_patches_keep_the_invariants_and_do_what_the_model_does(
    case: tuple[Limits, Node, list[Ops], Node],
) -> None:
    limits, root, steps, expected = case
    assert_invariants(root, limits)
    ops = [op for step in steps for op in step]
    root_before, ops_before = copy.deepcopy(root), copy.deepcopy(ops)

    result = apply(root, ops, limits)

    assert_invariants(result, limits)
    assert result == expected
    assert root == root_before  # the input is never changed
    assert ops == ops_before
    one_by_one = root
    for step in steps:
        one_by_one = apply(one_by_one, step, limits)
        assert_invariants(one_by_one, limits)
    assert one_by_one == result
    assert apply(result, [], limits) == result


# --- invalid patches ---------------------------------------------------------------------

#: Kinds of broken op that fail wherever they stand in a patch.
ANYWHERE = ("outside", "failing_test")
#: Kinds that break the tree as the valid part of the patch leaves it: they go last.
AT_THE_END = (
    "missing_from",
    "remove_root",
    "replace_root",
    "duplicate_id",
    "duplicate_by_rename",
    "too_many_nodes",
    "too_deep",
    "value_too_long",
    "bad_node",
    "bad_key",
    "bad_index",
    "missing_path",
    "into_itself",
)
BAD_NODES: list[Any] = [
    {"id": "x", "value": ""},
    {"id": "x", "children": []},
    {"id": "x", "value": "", "children": [], "extra": 1},
    {"value": "", "children": []},
    {"id": 1, "value": "", "children": []},
    {"id": None, "value": "", "children": []},
    {"id": "", "value": "", "children": []},
    {"id": "a\x00b", "value": "", "children": []},
    {"id": "x" * (ID_CHARS + 1), "value": "", "children": []},
    {"id": "x", "value": 1, "children": []},
    {"id": "x", "value": None, "children": []},
    {"id": "x", "value": ["v"], "children": []},
    {"id": "x", "value": "a\x00", "children": []},
    {"id": "x", "value": "", "children": {}},
    {"id": "x", "value": "", "children": None},
    {"id": "x", "value": "", "children": ["y"]},
    {"id": "x", "value": "", "children": [{"id": "y"}]},
    "x",
    None,
    [],
]
OPS = ("add", "remove", "replace", "move", "copy", "test")


def invalid_op(draw: Draw, kind: str, state: Node, limits: Limits) -> Ops:
    """Ops of ``kind`` that make any patch they end (or, for ``ANYWHERE``, sit in) invalid."""
    nodes = list(walk(state))
    used = ids_of(state)
    node, path, depth = draw(st.sampled_from(nodes))
    match kind:
        case "outside":
            pointer = draw(
                st.one_of(
                    st.sampled_from(
                        ["", "/", "/version", "/chat_id", "/Root", "/rootx", "/root~1x"]
                    ),
                    st.text(chars, max_size=20),
                ).filter(lambda p: p != "/root" and not p.startswith("/root/"))
            )
            op = draw(st.sampled_from(OPS))
            if op in ("move", "copy") and draw(st.booleans()):
                return [{"op": op, "from": pointer, "path": "/root/value"}]
            return [{"op": op, "path": pointer, "value": leaf("x"), "from": "/root/value"}]
        case "failing_test":
            # No valid step changes the root's id, and no value is ever a number.
            if draw(st.booleans()):
                wrong = draw(texts.filter(lambda t: t != ROOT_ID))
                return [{"op": "test", "path": "/root/id", "value": wrong}]
            return [{"op": "test", "path": f"{path}/value", "value": draw(st.integers())}]
        case "missing_from":
            return [
                {
                    "op": draw(st.sampled_from(["move", "copy"])),
                    "from": f"{path}/children/{len(node['children'])}",
                    "path": "/root/children/-",
                }
            ]
        case "remove_root":
            return [{"op": "remove", "path": "/root"}]
        case "replace_root":
            other = draw(texts.filter(lambda t: t != ROOT_ID))
            return [{"op": "replace", "path": "/root", "value": leaf(other)}]
        case "duplicate_id":
            taken = draw(st.sampled_from(sorted(used)))
            return [{"op": "add", "path": f"{path}/children/-", "value": leaf(taken)}]
        case "duplicate_by_rename" if len(nodes) > 1:
            other = draw(st.sampled_from(sorted(used - {node["id"]})))
            return [{"op": "replace", "path": f"{path}/id", "value": other}]
        case "too_many_nodes":
            room = limits.nodes - len(nodes)
            extra = [leaf(fresh_id(draw, used)) for _ in range(room)]
            return [
                {
                    "op": "add",
                    "path": "/root/children/-",
                    "value": {**leaf(fresh_id(draw, used)), "children": extra},
                }
            ]
        case "too_deep":
            chain = leaf(fresh_id(draw, used))
            for _ in range(limits.depth - depth):
                chain = {**leaf(fresh_id(draw, used)), "children": [chain]}
            return [{"op": "add", "path": f"{path}/children/-", "value": chain}]
        case "value_too_long":
            long = "v" * draw(st.integers(limits.value_chars + 1, limits.value_chars + 5))
            if draw(st.booleans()):
                return [{"op": "replace", "path": f"{path}/value", "value": long}]
            return [
                {"op": "add", "path": "/root/children/0", "value": leaf(fresh_id(draw, used), long)}
            ]
        case "bad_node":
            bad = copy.deepcopy(draw(st.sampled_from(BAD_NODES)))
            if draw(st.booleans()) or path == "/root":
                return [{"op": "add", "path": f"{path}/children/-", "value": bad}]
            return [{"op": "replace", "path": path, "value": bad}]
        case "bad_key":
            key = draw(st.sampled_from(["id", "value", "children"]))
            if draw(st.booleans()):
                return [{"op": "remove", "path": f"{path}/{key}"}]
            if draw(st.booleans()):
                extra = draw(texts.filter(lambda t: t not in NODE_KEYS and not {"/", "~"} & set(t)))
                return [{"op": "add", "path": f"{path}/{extra}", "value": ""}]
            return [{"op": "move", "from": f"{path}/{key}", "path": f"{path}/moved"}]
        case "bad_index":
            count = len(node["children"])
            index = draw(st.sampled_from([str(count + 1), str(count + 7), "-1", "01", "x", ""]))
            op = draw(st.sampled_from(["add", "remove", "replace", "test"]))
            return [
                {"op": op, "path": f"{path}/children/{index}", "value": leaf(fresh_id(draw, used))}
            ]
        case "missing_path":
            return [
                {"op": "test", "path": f"{path}/children/{len(node['children'])}/id", "value": "x"}
            ]
        case "into_itself" if path != "/root":
            target = draw(st.sampled_from([f"{path}/children/-", f"{path}/children/0"]))
            return [{"op": "move", "from": path, "path": target}]
    return [{"op": "remove", "path": "/root"}]  # a kind that does not fit this tree


@st.composite
def invalid_patches(draw: Draw) -> tuple[Limits, Node, Ops, str]:
    limits = draw(limits_st)
    root = draw(trees(limits))
    state, ops = root, []
    for _ in range(draw(st.integers(0, 4))):
        step, state = valid_step(draw, state, limits)
        ops += step
    kind = draw(st.sampled_from(ANYWHERE + AT_THE_END))
    bad = invalid_op(draw, kind, state, limits)
    if kind in ANYWHERE:
        # Anywhere, also before the valid ops it makes fail (their paths may then miss too).
        at_index = draw(st.integers(0, len(ops)))
        ops = ops[:at_index] + bad + ops[at_index:]
    else:
        ops += bad
    return limits, root, ops, kind


@PROPS
@given(invalid_patches())
def test_invalid_patches_raise_and_change_nothing(case: tuple[Limits, Node, Ops, str]) -> None:
    limits, root, ops, kind = case
    event(kind)
    root_before = copy.deepcopy(root)
    with pytest.raises(InvalidPatch):
        apply(root, ops, limits)
    assert root == root_before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def random_ops(draw: Draw) -> tuple[Limits, Node, Ops]:
    """Wire-shaped ops (what ``PatchOperation`` lets through): a valid patch with some ops
    mutated (another op, path, ``from`` or value; a member dropped or added), and random
    ops with paths near the tree's. Some apply, most do not."""
    limits = draw(limits_st)
    root = draw(trees(limits))
    # Byte limits the drawn tree may already be near, or over.
    limits = limits._replace(
        tree_bytes=draw(st.integers(40, 3000)), op_bytes=draw(st.integers(2, 600))
    )
    pointers = [p for _, p, _ in walk(root)]
    suffixes = ["", "/id", "/value", "/children", "/children/0", "/children/-", "/children/9"]
    pointer = st.one_of(
        st.builds(lambda p, s: p + s, st.sampled_from(pointers), st.sampled_from(suffixes)),
        st.text(chars, max_size=12).map(lambda t: "/root" + t),
        st.text(chars, max_size=12),
    )
    value = st.one_of(
        texts,
        st.builds(leaf, texts.filter(bool), texts),
        json_values,
        st.builds(
            lambda i, v, c: {"id": i, "value": v, "children": c},
            texts,
            texts,
            st.lists(json_values, max_size=2),
        ),
    )
    state, ops = root, []
    for _ in range(draw(st.integers(0, 3))):
        step, state = valid_step(draw, state, limits)
        ops += step
    for op in ops:
        mutation = draw(st.sampled_from(["none", "none", "op", "path", "from", "value", "drop"]))
        if mutation == "op":
            op["op"] = draw(st.sampled_from(OPS))
        elif mutation in ("path", "from"):
            op[mutation] = draw(pointer)
        elif mutation == "value":
            op["value"] = draw(value)
        elif mutation == "drop":
            del op[draw(st.sampled_from(sorted(op)))]
            if "op" not in op or "path" not in op:  # the wire requires both
                op.update(op=draw(st.sampled_from(OPS)), path=draw(pointer))
    for _ in range(draw(st.integers(0 if ops else 1, 2))):
        kind = draw(st.sampled_from(OPS))
        op: dict[str, Any] = {"op": kind, "path": draw(pointer)}
        if kind in ("move", "copy"):
            op["from"] = draw(pointer)
        if kind in ("add", "replace", "test"):
            op["value"] = draw(value)
        ops.insert(draw(st.integers(0, len(ops))), op)
    return limits, root, ops


@PROPS
@given(random_ops())
def test_random_ops_apply_validly_or_raise_invalid_patch(case: tuple[Limits, Node, Ops]) -> None:
    limits, root, ops = case
    root_before, ops_before = copy.deepcopy(root), copy.deepcopy(ops)
    try:
        result = apply(root, ops, limits)
    except InvalidPatch:
        event("refused")
    else:
        event("applied")
        assert_invariants(result, limits)
        assert len(msgspec.json.encode(result)) <= limits.tree_bytes
    assert root == root_before
    assert ops == ops_before


# --- the model's tools -------------------------------------------------------------------


def call(tool: str, **arguments: Any) -> ToolCall:
    return ToolCall(name=tool, arguments=json.dumps(arguments))


#: The model's stand-in for an id the server makes up (no generated id has a NUL).
NEW = "\x00new"


def find(root: Node, node_id: str) -> tuple[Node, str, int]:
    return next((n, p, d) for n, p, d in walk(root) if n["id"] == node_id)


@st.composite
def valid_tool_calls(draw: Draw) -> tuple[Limits, Node, ToolCall, Node, str | None]:
    """A valid call on a random tree, the tree after it, and the id it acts on (``None``
    when the server picks it)."""
    limits = draw(limits_st)
    root = draw(trees(limits))
    new = copy.deepcopy(root)
    nodes = list(walk(new))
    non_root = nodes[1:]
    kind = draw(st.sampled_from(["add", "rename", "move", "remove"]))
    parents = [n for n, _, d in nodes if d < limits.depth]
    if kind == "add" and parents and len(nodes) < limits.nodes:
        parent = draw(st.sampled_from(parents))
        value = value_for(draw, limits)
        chosen = draw(st.one_of(st.none(), st.just(fresh_id(draw, ids_of(new)))))
        arguments: dict[str, Any] = {"parent_id": parent["id"], "value": value}
        if chosen is not None or draw(st.booleans()):
            arguments["id"] = chosen  # an explicit null: the server picks the id too
        parent["children"].append(leaf(chosen or NEW, value))
        return limits, root, call("tree_add_node", **arguments), new, chosen
    if kind == "move" and non_root:
        node, source, _ = draw(st.sampled_from(non_root))
        moved = detach(new, source)
        targets = [n for n, _, d in walk(new) if d + height(moved) <= limits.depth]
        target = draw(st.sampled_from(targets))
        index = draw(st.one_of(st.none(), st.integers(0, len(target["children"]))))
        target["children"].insert(len(target["children"]) if index is None else index, moved)
        arguments = {"id": node["id"], "parent_id": target["id"]}
        if index is not None:
            arguments["index"] = index
        return limits, root, call("tree_move_node", **arguments), new, node["id"]
    if kind == "remove" and non_root:
        node, path, _ = draw(st.sampled_from(non_root))
        detach(new, path)
        return limits, root, call("tree_remove_node", id=node["id"]), new, node["id"]
    node, _, _ = draw(st.sampled_from(nodes))
    node["value"] = value_for(draw, limits)
    return (
        limits,
        root,
        call("tree_rename_node", id=node["id"], value=node["value"]),
        new,
        node["id"],
    )


@PROPS
@given(valid_tool_calls())
def test_valid_tool_calls_become_patches_that_apply(
    case: tuple[Limits, Node, ToolCall, Node, str | None],
) -> None:
    limits, root, tool_call, expected, acted_on = case
    event(tool_call.name)
    root_before = copy.deepcopy(root)

    ops, node_id = tool_patch(root, tool_call)
    result = apply(root, ops, limits)

    assert_invariants(result, limits)
    assert root == root_before
    if acted_on is None:  # a new node with an id the server made up
        assert node_id not in ids_of(root)
        find(expected, NEW)[0]["id"] = node_id
    else:
        assert node_id == acted_on
    assert result == expected


@st.composite
def invalid_tool_calls(draw: Draw) -> tuple[Limits, Node, ToolCall, str]:
    limits = draw(limits_st)
    root = draw(trees(limits))
    nodes = list(walk(root))
    node, path, depth = draw(st.sampled_from(nodes))
    some_id = node["id"]
    unknown = draw(texts.filter(lambda t: t not in ids_of(root)))
    kind = draw(
        st.sampled_from(
            [
                "unknown_tool",
                "not_json",
                "not_an_object",
                "missing_argument",
                "wrong_type",
                "extra_argument",
                "unknown_id",
                "root",
                "under_itself",
                "bad_index",
                "duplicate_id",
                "limits",
            ]
        )
    )
    name = draw(
        st.sampled_from(["tree_add_node", "tree_rename_node", "tree_move_node", "tree_remove_node"])
    )
    good = {
        "tree_add_node": {"parent_id": some_id, "value": "v"},
        "tree_rename_node": {"id": some_id, "value": "v"},
        "tree_move_node": {"id": some_id, "parent_id": ROOT_ID},
        "tree_remove_node": {"id": some_id},
    }[name]
    match kind:
        case "unknown_tool":
            other = draw(texts.filter(lambda t: not t.startswith("tree_")))
            return limits, root, call(other, **good), kind
        case "not_json":
            text = draw(st.sampled_from(["{", "not json", '{"id": }', "[1,", "\x00"]))
            return limits, root, ToolCall(name=name, arguments=text), kind
        case "not_an_object":
            text = json.dumps(
                draw(st.one_of(st.lists(texts, max_size=2), texts, st.integers(), st.none()))
            )
            return limits, root, ToolCall(name=name, arguments=text), kind
        case "missing_argument":
            arguments = dict(good)
            del arguments[draw(st.sampled_from(sorted(arguments)))]
            return limits, root, call(name, **arguments), kind
        case "wrong_type":
            key = draw(st.sampled_from(sorted(good)))
            wrong = draw(
                st.one_of(
                    st.integers(), st.lists(texts, max_size=1), st.booleans(), st.just({"x": 1})
                )
            )
            return limits, root, call(name, **{**good, key: wrong}), kind
        case "extra_argument":
            extra = draw(texts.filter(lambda t: t not in ("id", "parent_id", "value", "index")))
            return limits, root, call(name, **{**good, extra: 1}), kind
        case "unknown_id":
            key = draw(st.sampled_from([k for k in good if k.endswith("id")]))
            return limits, root, call(name, **{**good, key: unknown}), kind
        case "root":
            if draw(st.booleans()):
                return limits, root, call("tree_remove_node", id=ROOT_ID), kind
            return limits, root, call("tree_move_node", id=ROOT_ID, parent_id=some_id), kind
        case "under_itself" if path != "/root":
            inside = draw(st.sampled_from([n["id"] for n, _, _ in walk(node)]))
            return limits, root, call("tree_move_node", id=some_id, parent_id=inside), kind
        case "bad_index" if path != "/root":
            outside = [n for n, p, _ in nodes if p != path and not p.startswith(path + "/")]
            target = draw(st.sampled_from(outside))
            room = len([c for c in target["children"] if c["id"] != some_id])
            index = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=room + 1)))
            arguments = {"id": some_id, "parent_id": target["id"], "index": index}
            return limits, root, call("tree_move_node", **arguments), kind
        case "duplicate_id":
            taken = draw(st.sampled_from(sorted(ids_of(root))))
            return limits, root, call("tree_add_node", parent_id=some_id, value="v", id=taken), kind
        case "limits":
            bad_value = draw(st.sampled_from(["v" * (limits.value_chars + 1), "a\x00"]))
            if draw(st.booleans()):
                return limits, root, call("tree_rename_node", id=some_id, value=bad_value), kind
            if depth < limits.depth and len(nodes) < limits.nodes:
                return limits, root, call("tree_add_node", parent_id=some_id, value=bad_value), kind
            # a new node would break the depth or the node limit
            return limits, root, call("tree_add_node", parent_id=some_id, value="v"), kind
    return limits, root, call("tree_remove_node", id=unknown), "unknown_id"


@PROPS
@given(invalid_tool_calls())
def test_invalid_tool_calls_raise_invalid_patch(case: tuple[Limits, Node, ToolCall, str]) -> None:
    limits, root, tool_call, kind = case
    event(kind)
    root_before = copy.deepcopy(root)
    with pytest.raises(InvalidPatch):
        tool_patch_then_apply(root, tool_call, limits)
    assert root == root_before


def tool_patch_then_apply(root: Node, tool_call: ToolCall, limits: Limits) -> Node:
    """What ``trees.apply_tool`` does: limits and unique ids are ``apply``'s to check."""
    ops, _ = tool_patch(root, tool_call)
    return apply(root, ops, limits)
