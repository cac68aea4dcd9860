"""The workspace tree in the web client (docs/protocol.md section 5), in headless Chromium.

The page shows the tree of the chat on screen beside the conversation, applies
``tree_update`` events to its copy as they come, fetches the tree again when it
misses a version, and edits a node's text with a PATCH. Changes here come from
the REST API (as the same user, from the test), which sends the same
``tree_update`` to every subscriber as a change by the model. Each test runs on
SQLite and PostgreSQL (through ``server``).
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonpatch
import jsonpointer
from playwright.sync_api import Locator, Page, Request, WebSocketRoute, expect

from tests.browser import screenshot
from tests.fake_openai import directive
from tests.support import Server, User, register_and_login
from tests.support.http import tls
from tests.test_web_client import ASSISTANT, log_in, send, wait_for_partial_reply

WEB = Path(__file__).resolve().parent.parent / "chatsvc" / "web"
PANEL = "#tree-panel"
MARKUP = "<img src=x onerror=alert(1)>"

#: Reads the tree on screen back into the protocol's shape.
READ_TREE = """() => {
    const read = (item) => ({
        id: item.querySelector(":scope > .tree-row > .tree-id").textContent,
        value: item.querySelector(":scope > .tree-row > .tree-value").textContent,
        children: [...item.querySelectorAll(":scope > ul > li")].map(read),
    });
    const top = document.querySelector("#tree > ul > li");
    return top ? read(top) : null;
}"""


# --- helpers ----------------------------------------------------------------------------


def node(node_id: str, value: str, *children: dict[str, Any]) -> dict[str, Any]:
    return {"id": node_id, "value": value, "children": list(children)}


def get_tree(user: User, chat_id: str) -> dict[str, Any]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}/tree")
    assert answer.status_code == 200, answer.text
    return answer.json()


def patch_tree(user: User, chat_id: str, version: int, ops: list[dict[str, Any]]) -> dict:
    with user.client() as client:
        answer = client.patch(f"/api/chats/{chat_id}/tree", json={"version": version, "ops": ops})
    assert answer.status_code == 200, answer.text
    return answer.json()


def chat_with_tree(user: User, title: str, *children: dict[str, Any]) -> tuple[str, dict]:
    """A new chat whose root has ``children`` (version 1)."""
    with user.client() as client:
        created = client.post("/api/chats", json={"title": title})
    assert created.status_code == 201, created.text
    chat_id = created.json()["id"]
    ops = [{"op": "add", "path": "/root/children/-", "value": child} for child in children]
    return chat_id, patch_tree(user, chat_id, 0, ops)


def open_chat(page: Page, server: Server, user: User, chat_id: str, version: int) -> None:
    """Log in on the chat's own address and wait until its tree is on screen, fetched once
    the socket follows the chat (before that, the page fetches it once more)."""
    log_in(page, f"{server.url}/#/chat/{chat_id}", user)
    expect(page.locator(PANEL)).to_have_attribute("data-live", "true")
    expect_version(page, version)


def expect_version(page: Page, version: int) -> None:
    expect(page.locator(PANEL)).to_have_attribute("data-version", str(version))


def value_of(page: Page, node_id: str) -> Locator:
    """The text of node ``node_id`` on screen (a button that opens its editor)."""
    return page.locator(f"{PANEL} li[data-id='{node_id}'] > .tree-row > .tree-value")


def tree_on_screen(page: Page) -> dict[str, Any]:
    return page.evaluate(READ_TREE)


def tree_requests(page: Page) -> list[Request]:
    """Every request the page makes from now on to ``/api/chats/{id}/tree``."""
    seen: list[Request] = []

    def record(request: Request) -> None:
        if urlsplit(request.url).path.endswith("/tree"):
            seen.append(request)

    page.on("request", record)
    return seen


def gets(requests: list[Request]) -> int:
    return sum(request.method == "GET" for request in requests)


class RoutedSocket:
    """Sits between the page's WebSockets and the server: what the server sends passes
    through unless ``drop`` accepts it (as if the page never got it)."""

    def __init__(self, page: Page) -> None:
        self.drop: Callable[[dict[str, Any]], bool] = lambda frame: False
        self.dropped: list[dict[str, Any]] = []
        self.sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []  # (page, server) sides
        page.route_web_socket(re.compile(r"/ws\?"), self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()  # the page's frames go on to the server unchanged

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if self.drop(frame):
                self.dropped.append(frame)
            else:
                ws.send(message)

        server.on_message(from_server)
        self.sockets.append((ws, server))

    def drop_tree_updates(self, versions: set[int] | None = None) -> None:
        """Drop ``tree_update`` events (of these versions; all with None)."""
        self.drop = lambda frame: (
            frame["type"] == "tree_update" and (versions is None or frame["version"] in versions)
        )

    def deliver_everything(self) -> None:
        self.drop = lambda frame: False

    def cut(self) -> None:
        """Close the page's latest socket as a restarting server does (1012)."""
        page_side, server_side = self.sockets[-1]
        server_side.close()
        page_side.close(code=1012, reason="restarting")


# --- the files ------------------------------------------------------------------------------


def test_the_tree_script_is_served_from_this_host_and_never_parses_html(server: Server) -> None:
    with httpx.Client(base_url=server.url, verify=tls()) as client:
        html = client.get("/").text
        scripts = [client.get(f"/static/{name}") for name in ("tree.js", "json-patch.js")]
    for script in scripts:
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
    # One module script, app.js, which imports the rest (chat.js creates the panel).
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/app.js">']
    for path in [*sorted(WEB.glob("*.js")), WEB / "index.html", WEB / "app.css"]:
        name = path.name
        text = path.read_text()
        assert not re.search(r"https?://|[\"'(]//", text), name  # nothing from another host
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), name


def test_the_pages_json_patch_agrees_with_the_servers(server: Server, page: Page) -> None:
    """json-patch.js's RFC 6902 code against the ``jsonpatch`` library the server applies patches
    with: whatever the server applies (and so publishes), the page applies the same way.
    Edge cases, then a few hundred random patches on random trees."""
    page.goto(server.url)
    rng = random.Random(6902)

    def pointers(value: Any, at: str = "") -> list[str]:
        found = [at]
        if isinstance(value, dict):
            for key, item in value.items():
                found += pointers(item, f"{at}/{key.replace('~', '~0').replace('/', '~1')}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                found += pointers(item, f"{at}/{index}")
        return found

    def random_tree(depth: int = 0) -> dict[str, Any]:
        children = [random_tree(depth + 1) for _ in range(rng.randint(0, 3 - depth))]
        return node(f"n{rng.randint(0, 10**6)}", rng.choice(["", "a", "~1/", "é"]), *children)

    def random_op(document: dict[str, Any]) -> dict[str, Any]:
        paths = pointers(document)
        path = rng.choice(paths)
        kind = rng.choice(["add", "remove", "replace", "move", "copy", "test"])
        if kind in ("add", "move", "copy") and rng.random() < 0.6:
            container = rng.choice([p for p in paths if p.endswith("/children")] or paths)
            path = f"{container}/{rng.choice(['-', '0', '1', '2', '01', '9'])}"
        op: dict[str, Any] = {"op": kind, "path": path}
        if kind in ("move", "copy"):
            op["from"] = rng.choice(paths)
        elif kind == "test":
            op["value"] = copy.deepcopy(
                jsonpointer.resolve_pointer(document, rng.choice(paths))
                if rng.random() < 0.7
                else "nope"
            )
        elif kind != "remove":
            op["value"] = rng.choice(["new", node("x", "X"), [], {"k": "v"}])
        return op

    cases: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    edge = {"root": node("root", "", node("a", "A", node("a1", "A1")), node("b", "B"))}
    for ops in (
        [{"op": "add", "path": "/root/children/-", "value": node("c", "C")}],
        [{"op": "add", "path": "/root/children/2", "value": node("c", "C")}],
        [{"op": "add", "path": "/root/children/3", "value": node("c", "C")}],  # out of range
        [{"op": "add", "path": "/root/children/01", "value": node("c", "C")}],  # leading zero
        [{"op": "replace", "path": "/root/children/-", "value": "x"}],
        [{"op": "remove", "path": "/root/children/2"}],
        [{"op": "remove", "path": "/root/nothing"}],
        [{"op": "add", "path": "/root/new~1key~0", "value": 1}],  # escaped object key
        [{"op": "move", "from": "/root/children/0", "path": "/root/children/1"}],
        [{"op": "move", "from": "/root/children/1", "path": "/root/children/0/children/0"}],
        [{"op": "move", "from": "/root/children/0", "path": "/root/children/0/children/0"}],
        [{"op": "move", "from": "/root/children/0", "path": "/root/children/0"}],
        [{"op": "copy", "from": "/root/children/0", "path": "/root/children/0/children/-"}],
        [{"op": "test", "path": "/root/children/1", "value": node("b", "B")}],
        [{"op": "test", "path": "/root/children/1", "value": node("b", "C")}],
        [{"op": "replace", "path": "/root", "value": node("root", "all new")}],
        [
            {"op": "replace", "path": "/root/value", "value": "first"},
            {"op": "test", "path": "/root/value", "value": "second"},  # all or nothing
        ],
    ):
        cases.append((edge, ops))
    for _ in range(300):
        document = {"root": random_tree()}
        ops, scratch = [], copy.deepcopy(document)
        for _ in range(rng.randint(1, 4)):
            op = random_op(scratch)
            ops.append(op)
            try:
                scratch = jsonpatch.apply_patch(scratch, [op])
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
                break
        cases.append((document, ops))

    expected = []
    for document, ops in cases:
        try:
            expected.append(jsonpatch.apply_patch(document, ops))
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
            expected.append(None)
    actual = page.evaluate(
        """async (cases) => {
            const { applyJsonPatch, PatchError } = await import("/static/json-patch.js");
            return cases.map(([document, ops]) => {
                try { return applyJsonPatch(document, ops); } catch (error) {
                    return error instanceof PatchError ? null : `crashed: ${error}`;
                }
            });
        }""",
        cases,
    )
    for (document, ops), want, got in zip(cases, expected, actual, strict=True):
        assert got == want, (document, ops)
    # Both outcomes, and every kind of op in a patch that applied, were tried.
    applied = [ops for (_, ops), want in zip(cases, expected, strict=True) if want is not None]
    assert 100 < len(applied) < len(cases) - 100
    assert {op["op"] for ops in applied for op in ops} == {
        "add",
        "remove",
        "replace",
        "move",
        "copy",
        "test",
    }

    # Where the page differs on purpose: no `__proto__` key (the server's tree rules
    # refuse any key but id, value and children, so it never publishes one either).
    refused = page.evaluate(
        """async (document) => {
            const { applyJsonPatch, PatchError } = await import("/static/json-patch.js");
            try {
                applyJsonPatch(document, [
                    {op: "add", path: "/root/__proto__", value: {polluted: true}},
                ]);
                return false;
            } catch (error) { return error instanceof PatchError; }
        }""",
        edge,
    )
    assert refused is True
    assert page.evaluate("({}).polluted") is None


# --- showing the tree ---------------------------------------------------------------------------


def test_the_page_shows_the_tree_of_the_chat_beside_it(server: Server, page: Page) -> None:
    """Also takes the screenshots of the tree (wide and narrow) for tests/artifacts/."""
    user = register_and_login(server)
    chat_id, tree = chat_with_tree(
        user,
        "Trip to Lisbon",
        node(
            "days",
            "Itinerary",
            node("day-1", "Day 1: Alfama and tram 28"),
            node("day-2", "Day 2: Belém, pastéis de nata"),
        ),
        node("packing", "Packing", node("sun", "Sunscreen"), node("shoes", "")),
        node("budget", "Budget: about 600 €\nflights not included"),
    )
    tree = patch_tree(
        user, chat_id, 1, [{"op": "replace", "path": "/root/value", "value": "Lisbon"}]
    )
    open_chat(page, server, user, chat_id, 2)

    assert tree_on_screen(page) == tree["root"]
    panel = page.locator(PANEL)
    expect(panel.get_by_role("heading", name="Tree")).to_be_visible()
    expect(page.locator("#tree-version")).to_have_text("version 2")
    expect(panel.locator("li[data-id='day-2'] .tree-id")).to_have_text("day-2")  # ids, subtly
    expect(value_of(page, "shoes")).to_have_text("")  # an empty value
    # The panel sits beside the conversation.
    chat_box = page.locator("main.chat").bounding_box()
    panel_box = panel.bounding_box()
    assert chat_box
    assert panel_box
    assert panel_box["x"] >= chat_box["x"] + chat_box["width"] - 1
    expect(page.get_by_role("button", name="Tree", exact=True)).to_be_hidden()  # wide: no toggle
    screenshot(page, "web-client-tree")

    # A narrow screen: the tree opens over the conversation from the top bar, and closes.
    page.set_viewport_size({"width": 390, "height": 760})
    expect(panel).to_be_hidden()
    toggle = page.get_by_role("button", name="Tree", exact=True)
    toggle.click()
    expect(panel).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#message-input")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "web-client-tree-narrow")
    page.get_by_role("button", name="Chats", exact=True).click()  # one panel at a time
    expect(panel).to_be_hidden()
    expect(page.locator("#chat-list")).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.get_by_role("button", name="Chats", exact=True).click()
    expect(page.locator("#message-input")).to_be_visible()


def test_a_new_chat_shows_its_empty_tree_once_it_exists(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    expect(page.locator("#tree")).to_contain_text("appears here once the chat has started")
    send(page, f"hello {directive(tokens=2)}")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    expect_version(page, 0)
    assert tree_on_screen(page) == node("root", "")
    expect(page.locator("#tree")).to_contain_text("Nothing here yet")


# --- live updates ---------------------------------------------------------------------------


def test_changes_made_elsewhere_appear_live_without_fetching_the_tree(
    server: Server, page: Page
) -> None:
    """Every kind of JSON Patch op, applied by the page to its copy: no reload, no GET."""
    user = register_and_login(server)
    chat_id, tree = chat_with_tree(
        user, "Live", node("a", "A", node("a1", "A1"), node("a2", "A2")), node("b", "B")
    )
    requests = tree_requests(page)
    open_chat(page, server, user, chat_id, 1)
    page.evaluate("window.sameDocument = true")
    fetched = gets(requests)

    patches = [
        [{"op": "add", "path": "/root/children/1", "value": node("c", "C", node("c1", "C1"))}],
        [{"op": "replace", "path": "/root/children/0/value", "value": "A, renamed"}],
        [  # a move between parents, spelled as remove + add as the model's tools do
            {"op": "test", "path": "/root/children/0/children/1/id", "value": "a2"},
            {"op": "remove", "path": "/root/children/0/children/1"},
            {"op": "add", "path": "/root/children/2/children/0", "value": node("a2", "A2")},
        ],
        [{"op": "move", "from": "/root/children/1/children/0", "path": "/root/children/0"}],
        [
            {"op": "copy", "from": "/root/children/1/value", "path": "/root/value"},
            {"op": "remove", "path": "/root/children/3"},
        ],
        [{"op": "replace", "path": "/root/children/0/children", "value": [node("x", "~/~1")]}],
    ]
    version = tree["version"]
    for ops in patches:
        tree = patch_tree(user, chat_id, version, ops)
        version = tree["version"]
        expect_version(page, version)
        assert tree_on_screen(page) == tree["root"], ops

    # Two changes back to back: both applied, in order.
    first = patch_tree(
        user, chat_id, version, [{"op": "add", "path": "/root/children/-", "value": node("d", "")}]
    )
    second = patch_tree(
        user,
        chat_id,
        first["version"],
        [{"op": "replace", "path": "/root/children/3/value", "value": "D, at once"}],
    )
    expect_version(page, second["version"])
    assert tree_on_screen(page) == second["root"] == get_tree(user, chat_id)["root"]
    assert gets(requests) == fetched  # every change was applied, none fetched
    assert page.evaluate("window.sameDocument") is True  # and the page was not reloaded


def test_a_missed_update_makes_the_page_fetch_the_tree_again(server: Server, page: Page) -> None:
    user = register_and_login(server)
    chat_id, _ = chat_with_tree(user, "Gaps", node("a", "A"))
    routed = RoutedSocket(page)
    requests = tree_requests(page)
    open_chat(page, server, user, chat_id, 1)
    fetched = gets(requests)

    # The page never gets version 2; version 3 shows it a gap.
    routed.drop_tree_updates({2})
    two = patch_tree(
        user, chat_id, 1, [{"op": "add", "path": "/root/children/-", "value": node("b", "B")}]
    )
    three = patch_tree(
        user, chat_id, 2, [{"op": "replace", "path": "/root/children/1/value", "value": "B!"}]
    )
    expect_version(page, 3)
    assert [frame["version"] for frame in routed.dropped] == [2]
    assert tree_on_screen(page) == three["root"] != two["root"]
    assert gets(requests) == fetched + 1

    # Updates missed while the connection was down: the page reconnects and fetches again.
    routed.drop_tree_updates()
    four = patch_tree(user, chat_id, 3, [{"op": "remove", "path": "/root/children/0"}])
    page.wait_for_timeout(300)
    expect_version(page, 3)  # it did not get it
    routed.deliver_everything()
    routed.cut()
    expect_version(page, 4)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    assert tree_on_screen(page) == four["root"] == get_tree(user, chat_id)["root"]
    assert len(routed.sockets) == 2


# --- editing ----------------------------------------------------------------------------------


def test_editing_a_node_sends_a_patch(server: Server, page: Page) -> None:
    user = register_and_login(server)
    chat_id, _ = chat_with_tree(
        user, "Edit", node("a", "Alpha", node("a1", "first"), node("a2", "second")), node("b", "B")
    )
    requests = tree_requests(page)
    open_chat(page, server, user, chat_id, 1)
    editor = page.get_by_role("textbox", name="Node text")

    # Click the text: an editor with that text; Enter saves.
    value_of(page, "a2").click()
    expect(editor).to_be_focused()
    expect(editor).to_have_value("second")
    editor.fill("second, edited")
    editor.press("Enter")
    expect(page.locator("#tree-status")).to_have_text("Saved.")
    expect(editor).to_have_count(0)
    expect_version(page, 2)
    stored = get_tree(user, chat_id)
    assert stored["version"] == 2
    assert stored["root"]["children"][0]["children"][1] == node("a2", "second, edited")
    assert tree_on_screen(page) == stored["root"]
    [patch] = [request for request in requests if request.method == "PATCH"]
    assert patch.post_data_json == {
        "version": 1,
        "ops": [
            {
                "op": "replace",
                "path": "/root/children/0/children/1/value",
                "value": "second, edited",
            }
        ],
    }
    expect(value_of(page, "a2")).to_be_focused()  # back on the node

    # Escape cancels: nothing is sent.
    value_of(page, "b").click()
    editor.fill("not this")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(value_of(page, "b")).to_have_text("B")
    # The keyboard alone: Enter on a node opens the editor (and types nothing in it);
    # Shift+Enter adds a line.
    value_of(page, "root").focus()
    page.keyboard.press("Enter")
    expect(editor).to_have_value("")
    editor.press_sequentially("Notes")
    editor.press("Shift+Enter")
    editor.press_sequentially("two lines")
    editor.press("Enter")
    expect_version(page, 3)
    assert [request.method for request in requests].count("PATCH") == 2
    assert get_tree(user, chat_id)["root"]["value"] == "Notes\ntwo lines"
    expect(value_of(page, "root")).to_have_text("Notes\ntwo lines")

    # An edit open while a change arrives stays open, with its text, and saves against it.
    value_of(page, "a1").click()
    editor.fill("first, kept")
    patch_tree(
        user, chat_id, 3, [{"op": "add", "path": "/root/children/0", "value": node("z", "Z")}]
    )
    expect_version(page, 4)
    expect(editor).to_have_value("first, kept")
    expect(editor).to_be_focused()
    editor.press("Enter")
    expect_version(page, 5)
    assert get_tree(user, chat_id)["root"]["children"][1]["children"][0] == node(
        "a1", "first, kept"
    )


def test_a_stale_or_rejected_edit_is_explained(server: Server, page: Page) -> None:
    user = register_and_login(server)
    chat_id, _ = chat_with_tree(user, "Conflicts", node("a", "A"), node("b", "B"))
    routed = RoutedSocket(page)
    open_chat(page, server, user, chat_id, 1)
    editor = page.get_by_role("textbox", name="Node text")
    status = page.locator("#tree-status")

    # Someone else changes the tree, and the page does not hear of it: its save is stale.
    routed.drop_tree_updates()
    value_of(page, "b").click()
    patch_tree(
        user, chat_id, 1, [{"op": "replace", "path": "/root/children/0/value", "value": "A2"}]
    )
    editor.fill("B, mine")
    editor.press("Enter")
    expect(status).to_contain_text("The tree was changed meanwhile")
    expect(status).to_contain_text("press Enter to save your text again")
    expect_version(page, 2)  # fetched again
    expect(value_of(page, "a")).to_have_text("A2")
    expect(editor).to_have_value("B, mine")  # the text is not lost
    editor.press("Enter")
    expect(status).to_have_text("Saved.")
    expect_version(page, 3)
    stored = get_tree(user, chat_id)
    assert stored["root"]["children"] == [node("a", "A2"), node("b", "B, mine")]

    # The node being edited is removed meanwhile.
    value_of(page, "a").click()
    patch_tree(user, chat_id, 3, [{"op": "remove", "path": "/root/children/0"}])
    editor.fill("A, mine")
    editor.press("Enter")
    expect(status).to_contain_text("that node no longer exists")
    expect(editor).to_have_count(0)
    assert tree_on_screen(page) == get_tree(user, chat_id)["root"]

    # A text the server refuses (over the 1,000 characters of a value): the reason is shown.
    routed.deliver_everything()
    value_of(page, "b").click()
    editor.fill("x" * 1001)
    editor.press("Enter")
    expect(status).to_have_text(
        "The tree did not accept that text: node 'b': value longer than 1000."
    )
    expect(editor).to_be_focused()  # still open, to shorten it
    editor.press("Escape")
    expect(editor).to_have_count(0)
    assert get_tree(user, chat_id)["root"]["children"] == [node("b", "B, mine")]


def test_escape_in_the_editor_cancels_the_edit_not_the_reply(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"long {directive(tokens=200, rate=20)}")
    wait_for_partial_reply(page, "t2 ")
    expect_version(page, 0)
    value_of(page, "root").click()
    editor = page.get_by_role("textbox", name="Node text")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    wait_for_partial_reply(page, "t30 ")  # still streaming, a while later
    page.keyboard.press("Escape")  # outside the editor, Escape stops the reply as before
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "aborted")


# --- safety -----------------------------------------------------------------------------------


def test_markup_in_the_tree_is_shown_as_text(server: Server, page: Page) -> None:
    dialogs: list[str] = []
    problems: list[str] = []
    requested: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda message: problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requested.append(request.url))
    user = register_and_login(server)
    chat_id, tree = chat_with_tree(
        user,
        "Markup",
        node("plain", MARKUP),
        node('"><svg onload=alert(2)>', "<script>alert(3)</script> <b>bold</b> &amp;"),
    )
    open_chat(page, server, user, chat_id, 1)
    assert tree_on_screen(page) == tree["root"]
    expect(value_of(page, "plain")).to_have_text(MARKUP)

    # Live, and typed in the editor.
    live = patch_tree(
        user,
        chat_id,
        1,
        [{"op": "add", "path": "/root/children/-", "value": node("<i>id</i>", f"live {MARKUP}")}],
    )
    expect_version(page, 2)
    assert tree_on_screen(page) == live["root"]
    value_of(page, "root").click()
    editor = page.get_by_role("textbox", name="Node text")
    editor.fill(f"typed {MARKUP}")
    editor.press("Enter")
    expect_version(page, 3)
    expect(value_of(page, "root")).to_have_text(f"typed {MARKUP}")
    assert get_tree(user, chat_id)["root"]["value"] == f"typed {MARKUP}"

    assert (
        page.locator(f"{PANEL} img, {PANEL} svg, {PANEL} script, {PANEL} b, {PANEL} i").count() == 0
    )
    page.wait_for_timeout(300)
    assert dialogs == []
    assert not [url for url in requested if urlsplit(url).path == "/x"]
    assert problems == []  # no script error, no blocked inline script (CSP report)
