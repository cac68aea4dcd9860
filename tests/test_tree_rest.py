"""The workspace tree over REST (docs/protocol.md section 5): GET and PATCH
``/api/chats/{chat_id}/tree``, versions, all-or-nothing patches, the limits, and
the ``tree_update`` every subscriber of the chat gets. Real servers, both engines.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonpatch
import pytest

from tests.support import (
    AppServer,
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    start_app_server,
)

EMPTY_ROOT = {"id": "root", "value": "", "children": []}
#: The small limits of the ``limited`` server: nodes (the root included), depth (the root
#: is level 1), characters of a value.
MAX_NODES, MAX_DEPTH, MAX_VALUE_CHARS = 5, 3, 10


def node(node_id: str, value: str = "", children: list[dict] | None = None) -> dict[str, Any]:
    return {"id": node_id, "value": value, "children": children or []}


def add(parent_path: str, child: dict[str, Any]) -> dict[str, Any]:
    return {"op": "add", "path": f"{parent_path}/children/-", "value": child}


def new_chat(client: httpx.Client) -> str:
    response = client.post("/api/chats", json={"title": "tree"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def tree_of(client: httpx.Client, chat_id: str) -> dict[str, Any]:
    response = client.get(f"/api/chats/{chat_id}/tree")
    assert response.status_code == 200, response.text
    return response.json()


def patch(client: httpx.Client, chat_id: str, version: int, ops: list[dict]) -> httpx.Response:
    return client.patch(f"/api/chats/{chat_id}/tree", json={"version": version, "ops": ops})


def follow(socket: Socket, chat_id: str) -> None:
    """Subscribe, and know the server has handled it (frames are handled in order)."""
    socket.send(action="subscribe", chat_id=chat_id)
    socket.send(action="ping")
    assert socket.recv() == {"type": "pong"}


# --- reading and writing ---------------------------------------------------------------


def test_a_new_chat_has_version_0_and_the_root_only(alice: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        assert tree_of(client, chat_id) == {"chat_id": chat_id, "version": 0, "root": EMPTY_ROOT}


def test_a_patch_applies_and_bumps_the_version(alice: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        first = patch(client, chat_id, 0, [add("/root", node("a", "Alpha"))])
        assert first.status_code == 200, first.text
        expected = {
            "chat_id": chat_id,
            "version": 1,
            "root": node("root", children=[node("a", "Alpha")]),
        }
        assert first.json() == expected
        assert tree_of(client, chat_id) == expected

        ops = [
            add("/root/children/0", node("b", "Beta")),
            {"op": "replace", "path": "/root/value", "value": "Plan"},
            {"op": "copy", "from": "/root/children/0/value", "path": "/root/children/0/value"},
            {"op": "test", "path": "/root/children/0/children/0/id", "value": "b"},
            {"op": "add", "path": "/root/children/0", "value": node("first", "goes first")},
            {"op": "move", "from": "/root/children/1/children/0", "path": "/root/children/-"},
        ]
        second = patch(client, chat_id, 1, ops)
        assert second.status_code == 200, second.text
        expected = {
            "chat_id": chat_id,
            "version": 2,  # a whole patch is one version, however many ops it has
            "root": node(
                "root",
                "Plan",
                [node("first", "goes first"), node("a", "Alpha"), node("b", "Beta")],
            ),
        }
        assert second.json() == expected
        assert tree_of(client, chat_id) == expected


def test_a_stale_version_is_409_and_changes_nothing(alice: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        assert patch(client, chat_id, 0, [add("/root", node("a"))]).status_code == 200
        before = tree_of(client, chat_id)
        for version in (0, 2, 99):
            stale = patch(client, chat_id, version, [add("/root", node(f"v{version}"))])
            assert stale.status_code == 409, stale.text
            body = stale.json()
            assert body["code"] == "stale_version"
            assert body["status_code"] == 409
        assert tree_of(client, chat_id) == before


INVALID_PATCHES: dict[str, list[dict[str, Any]]] = {
    "a path that does not exist": [
        {"op": "replace", "path": "/root/children/5/value", "value": ""}
    ],
    "a path into a value": [{"op": "add", "path": "/root/value/x", "value": "y"}],
    "an index past the end": [{"op": "add", "path": "/root/children/3", "value": node("x")}],
    "a path not under /root": [{"op": "add", "path": "/other", "value": node("x")}],
    "the document itself": [{"op": "replace", "path": "", "value": {"root": EMPTY_ROOT}}],
    "the version": [{"op": "replace", "path": "/version", "value": 7}],
    "a from not under /root": [{"op": "copy", "from": "/version", "path": "/root/value"}],
    "a duplicate id": [add("/root", node("a"))],
    "two new nodes with one id": [add("/root", node("x")), add("/root", node("x"))],
    "a second root": [add("/root", node("root"))],
    "a node without children": [add("/root", {"id": "x", "value": ""})],
    "a node without a value": [add("/root", {"id": "x", "children": []})],
    "a node with an extra key": [add("/root", {**node("x"), "color": "red"})],
    "a number as value": [{"op": "replace", "path": "/root/value", "value": 3}],
    "a number as id": [add("/root", node(3))],  # type: ignore[arg-type]
    "an empty id": [add("/root", node(""))],
    "children that are not a list": [add("/root", {"id": "x", "value": "", "children": {}})],
    "a failing test in the middle": [
        add("/root", node("x", "kept?")),
        {"op": "test", "path": "/root/value", "value": "not this"},
        add("/root", node("y")),
    ],
    "removing the root": [{"op": "remove", "path": "/root"}],
    "replacing the root by another id": [{"op": "replace", "path": "/root", "value": node("top")}],
    "moving a node under itself": [
        {"op": "move", "from": "/root/children/0", "path": "/root/children/0/children/-"}
    ],
    "moving a node into its own path, though another node is there once it has left": [
        add("/root", node("b")),
        {"op": "move", "from": "/root/children/0", "path": "/root/children/0/children/-"},
    ],
    "copying a node (its id twice)": [
        {"op": "copy", "from": "/root/children/0", "path": "/root/children/-"}
    ],
    "removing a missing node": [{"op": "remove", "path": "/root/children/1"}],
}


@pytest.mark.parametrize("ops", list(INVALID_PATCHES.values()), ids=list(INVALID_PATCHES))
def test_an_invalid_patch_is_422_and_changes_nothing(alice: User, ops: list[dict]) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        assert patch(client, chat_id, 0, [add("/root", node("a", "Alpha"))]).status_code == 200
        before = tree_of(client, chat_id)
        refused = patch(client, chat_id, 1, ops)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["code"] == "invalid_patch"
        assert body["status_code"] == 422
        assert body["detail"]  # says what was wrong
        assert tree_of(client, chat_id) == before  # nothing applied, version unchanged
        # ...and the version is still the one to patch against
        assert patch(client, chat_id, 1, [add("/root", node("b"))]).status_code == 200


# --- limits, on a server with small ones -----------------------------------------------


@pytest.fixture(scope="module")
def limited(
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppServer]:
    running = start_app_server(
        make_database(engine, migrated=True),
        tmp_path_factory.mktemp(f"tree-limits-{engine}"),
        TREE_MAX_NODES=str(MAX_NODES),
        TREE_MAX_DEPTH=str(MAX_DEPTH),
        TREE_MAX_VALUE_CHARS=str(MAX_VALUE_CHARS),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def limited_user(limited: Server) -> User:
    return register_and_login(limited)


def _refused(client: httpx.Client, chat_id: str, version: int, ops: list[dict]) -> None:
    before = tree_of(client, chat_id)
    refused = patch(client, chat_id, version, ops)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_patch"
    assert tree_of(client, chat_id) == before


def test_the_node_limit(limited_user: User) -> None:
    with limited_user.client() as client:
        chat_id = new_chat(client)
        # One patch over the limit: the root and five nodes.
        _refused(client, chat_id, 0, [add("/root", node(f"n{i}")) for i in range(MAX_NODES)])
        # A subtree that crosses it in one op.
        big = node("big", children=[node(f"b{i}") for i in range(MAX_NODES - 1)])
        _refused(client, chat_id, 0, [add("/root", big)])
        # Exactly at the limit is fine; one more is not, whichever way it comes.
        fill = [add("/root", node(f"n{i}")) for i in range(MAX_NODES - 1)]
        assert patch(client, chat_id, 0, fill).status_code == 200
        _refused(client, chat_id, 1, [add("/root", node("one-more"))])
        _refused(client, chat_id, 1, [add("/root/children/0", node("one-more"))])
        # Removing one makes room for one.
        ops = [{"op": "remove", "path": "/root/children/0"}, add("/root", node("swap"))]
        assert patch(client, chat_id, 1, ops).status_code == 200


def test_the_depth_limit(limited_user: User) -> None:
    with limited_user.client() as client:
        chat_id = new_chat(client)
        _refused(
            client,
            chat_id,
            0,
            [add("/root", node("a", children=[node("b", children=[node("c")])]))],
        )
        assert (
            patch(client, chat_id, 0, [add("/root", node("a", children=[node("b")]))]).status_code
            == 200
        )
        _refused(client, chat_id, 1, [add("/root/children/0/children/0", node("c"))])
        # Moving a deep-enough subtree one level down breaks it too.
        ops = [
            add("/root", node("x")),
            {"op": "move", "from": "/root/children/0", "path": "/root/children/1/children/-"},
        ]
        _refused(client, chat_id, 1, ops)


def test_the_value_limit(limited_user: User) -> None:
    with limited_user.client() as client:
        chat_id = new_chat(client)
        exact = "é" * MAX_VALUE_CHARS  # characters, not bytes
        ops = [
            add("/root", node("a", exact)),
            {"op": "replace", "path": "/root/value", "value": exact},
        ]
        assert patch(client, chat_id, 0, ops).status_code == 200
        too_long = "x" * (MAX_VALUE_CHARS + 1)
        _refused(client, chat_id, 1, [{"op": "replace", "path": "/root/value", "value": too_long}])
        _refused(client, chat_id, 1, [add("/root", node("b", too_long))])
        _refused(
            client,
            chat_id,
            1,
            [{"op": "replace", "path": "/root/children/0/value", "value": too_long}],
        )


# --- who may see it ---------------------------------------------------------------------


def test_another_users_tree_is_404_like_an_unknown_chat(alice: User, bob: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
    unknown = str(uuid.uuid4())
    body = {"version": 0, "ops": [add("/root", node("intruder"))]}
    with bob.client() as client:
        for method, kwargs in (("GET", {}), ("PATCH", {"json": body})):
            theirs = client.request(method, f"/api/chats/{chat_id}/tree", **kwargs)
            nobodys = client.request(method, f"/api/chats/{unknown}/tree", **kwargs)
            assert theirs.status_code == 404, theirs.text
            assert theirs.json() == nobodys.json()
            assert theirs.json()["code"] == "not_found"
    with alice.client() as client:
        assert tree_of(client, chat_id)["version"] == 0


def test_a_deleted_chats_tree_is_gone(alice: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        assert patch(client, chat_id, 0, [add("/root", node("a"))]).status_code == 200
        assert client.delete(f"/api/chats/{chat_id}").status_code == 204
        assert client.get(f"/api/chats/{chat_id}/tree").status_code == 404
        assert patch(client, chat_id, 1, [add("/root", node("b"))]).status_code == 404
    rows = alice.server.db.query(
        "SELECT count(*) AS n FROM chat_tree WHERE chat = ?", uuid.UUID(chat_id)
    )
    assert rows[0]["n"] == 0


# --- tree_update ------------------------------------------------------------------------


def test_subscribers_get_tree_update(alice: User, bob: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        other_chat = new_chat(client)
    ops = [
        add("/root", node("a", "Alpha")),
        {"op": "move", "from": "/root/children/0", "path": "/root/children/-"},
        {"op": "copy", "from": "/root/children/0/value", "path": "/root/value"},
        {"op": "test", "path": "/root/value", "value": "Alpha"},
        {"op": "remove", "path": "/root/children/0"},
    ]
    with Socket(alice) as tab, Socket(alice) as second_tab, Socket(alice) as elsewhere:
        follow(tab, chat_id)
        follow(second_tab, chat_id)
        follow(elsewhere, other_chat)
        with alice.client() as client:
            response = patch(client, chat_id, 0, ops)
            assert response.status_code == 200, response.text
            refused = patch(client, chat_id, 0, ops)  # stale: no event
            assert refused.status_code == 409
            refused = patch(client, chat_id, 1, [{"op": "remove", "path": "/root"}])
            assert refused.status_code == 422  # invalid: no event
            again = patch(
                client, chat_id, 1, [{"op": "replace", "path": "/root/value", "value": "B"}]
            )
            assert again.status_code == 200
        updates = [tab.recv(), tab.recv()]
        second = [second_tab.recv(), second_tab.recv()]
        elsewhere.send(action="ping")
        assert elsewhere.recv() == {"type": "pong"}  # nothing of the other chat came
    # The change as applied, normalised: what the five ops did, not the ops as sent.
    assert updates[0] == {
        "type": "tree_update",
        "chat_id": chat_id,
        "version": 1,
        "ops": [{"op": "replace", "path": "/root/value", "value": "Alpha"}],
        "source": "user",
        "task_id": None,
    }
    rebuilt = jsonpatch.apply_patch({"root": EMPTY_ROOT}, updates[0]["ops"])
    assert rebuilt == {"root": response.json()["root"]}
    assert updates[1]["version"] == 2
    assert updates[1]["ops"] == [{"op": "replace", "path": "/root/value", "value": "B"}]
    assert second == updates


def test_concurrent_patches_from_one_version_one_wins(alice: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
    for round_ in range(8):
        barrier = threading.Barrier(2)
        answers: dict[str, httpx.Response] = {}

        def write(name: str, barrier: threading.Barrier, answers: dict, version: int) -> None:
            with alice.client() as client:
                barrier.wait()
                answers[name] = patch(client, chat_id, version, [add("/root", node(name))])

        threads = [
            threading.Thread(target=write, args=(f"r{round_}-{i}", barrier, answers, round_))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(a.status_code for a in answers.values())
        assert statuses == [200, 409], {k: a.text for k, a in answers.items()}
        loser = next(a for a in answers.values() if a.status_code == 409)
        assert loser.json()["code"] == "stale_version"
        winner = next(name for name, a in answers.items() if a.status_code == 200)
        assert answers[winner].json()["version"] == round_ + 1
    with alice.client() as client:
        tree = tree_of(client, chat_id)
    assert tree["version"] == 8
    assert len(tree["root"]["children"]) == 8  # exactly one node per round: no lost change


# --- the request body -------------------------------------------------------------------


#: Bodies whose `ops` are malformed: an invalid patch, 422 `invalid_patch`, as a patch the
#: tree's rules refuse (one code for a patch that cannot be applied).
BAD_OPS: dict[str, Any] = {
    "an unknown op": {"version": 0, "ops": [{"op": "frobnicate", "path": "/root/value"}]},
    "a missing path": {"version": 0, "ops": [{"op": "replace", "value": "x"}]},
    "a missing op": {"version": 0, "ops": [{"path": "/root/value", "value": "x"}]},
    "an unknown op field": {
        "version": 0,
        "ops": [{"op": "replace", "path": "/root/value", "value": "x", "extra": 1}],
    },
    "too many ops": {
        "version": 0,
        "ops": [{"op": "test", "path": "/root/id", "value": "root"}] * 1001,
    },
    "no ops": {"version": 0, "ops": []},
    "ops not a list": {"version": 0, "ops": {"op": "remove", "path": "/root"}},
    "a NUL in a path": {
        "version": 0,
        "ops": [{"op": "replace", "path": "/root/\u0000", "value": "x"}],
    },
}
#: Bodies malformed outside `ops`: invalid input, 400 `invalid_message`.
BAD_BODIES: dict[str, Any] = {
    "a missing version": {"ops": [{"op": "replace", "path": "/root/value", "value": "x"}]},
    "a negative version": {
        "version": -1,
        "ops": [{"op": "replace", "path": "/root/value", "value": "x"}],
    },
    "an unknown field": {
        "version": 0,
        "ops": [{"op": "replace", "path": "/root/value", "value": "x"}],
        "force": True,
    },
    "not an object": [],
}


@pytest.mark.parametrize("body", list(BAD_OPS.values()), ids=list(BAD_OPS))
def test_malformed_ops_are_an_invalid_patch(alice: User, body: Any) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        response = client.patch(f"/api/chats/{chat_id}/tree", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_patch"
        assert response.json()["extra"][0]["key"].startswith("ops")
        assert tree_of(client, chat_id)["version"] == 0


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_a_malformed_body_is_400(alice: User, body: Any) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        response = client.patch(f"/api/chats/{chat_id}/tree", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_message"
        assert tree_of(client, chat_id)["version"] == 0


def test_exactly_the_most_ops_allowed_are_accepted(alice: User) -> None:
    with alice.client() as client:
        chat_id = new_chat(client)
        ops = [{"op": "test", "path": "/root/id", "value": "root"}] * 1000
        response = patch(client, chat_id, 0, ops)
        assert response.status_code == 200, response.text
        # Every accepted patch is a version, even one that changes nothing.
        assert response.json() == {"chat_id": chat_id, "version": 1, "root": EMPTY_ROOT}
