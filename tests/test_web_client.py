"""The web client at ``/``, driven in headless Chromium against real servers.

Each test runs on SQLite and PostgreSQL (through ``server``). Replies come from
the fake OpenAI upstream (``directive`` scripts them), or, where the reply's
text matters (paragraphs, code, markup), from the built-in echo provider,
which repeats the message.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Locator, Page, Response, WebSocket, WebSocketRoute, expect

from tests.browser import screenshot
from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    PASSWORD,
    Server,
    Socket,
    User,
    register_and_login,
    unique_username,
)
from tests.support.http import tls
from tests.tcp_proxy import TcpProxy

WEB = Path(__file__).resolve().parent.parent / "chatsvc" / "web"
ASSISTANT = "#messages .message[data-role='assistant']"
USER = "#messages .message[data-role='user']"


# --- helpers ----------------------------------------------------------------------------


def log_in(page: Page, url: str, user: User) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message", exact=True)


def send(page: Page, text: str) -> None:
    box = composer(page)
    box.fill(text)
    box.press("Enter")


def chat_id_of(page: Page) -> str:
    match = re.search(r"#/chat/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    return match.group(1)


def stored_messages(user: User, chat_id: str) -> list[dict[str, Any]]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]


def wait_for_partial_reply(page: Page, text: str) -> None:
    """The last reply shows ``text`` while it is still streaming."""
    page.wait_for_function(
        """(text) => {
            const replies = document.querySelectorAll("#messages [data-role='assistant']");
            const last = replies[replies.length - 1];
            return last && last.dataset.status === "streaming"
                && last.querySelector(".body").textContent.includes(text);
        }""",
        arg=text,
    )


def body_text(page: Page, selector: str) -> str:
    return page.locator(selector).last.locator(":scope > .body").text_content() or ""


# --- the page itself ----------------------------------------------------------------------


def test_the_page_and_its_files_are_served_with_a_strict_policy(server: Server) -> None:
    with httpx.Client(
        base_url=server.url, verify=tls()
    ) as client:  # no token: the page logs in itself
        page = client.get("/")
        script = client.get("/static/app.js")
        style = client.get("/static/app.css")
        escape = client.get("/static/..%2Fapi%2Fweb.py")
        schema = client.get("/schema/openapi.json").json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    host = urlsplit(server.url).netloc
    for directive_text in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"connect-src 'self' ws://{host} wss://{host}",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive_text in policy
    assert "unsafe" not in policy
    # No inline script or style: every <script> has a src, no on* handlers, no style="".
    html = page.text
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<script[^>]*>\s*[^<\s]", html)
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=|<style", html)
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    assert escape.status_code == 404
    # Nothing comes from another host.
    for path in [WEB / "index.html", *WEB.glob("*.css"), *WEB.glob("*.js")]:
        assert not re.search(r"https?://|[\"'(]//", path.read_text()), path.name
    assert not [path for path in schema["paths"] if path == "/" or path.startswith("/static")]
    port = urlsplit(server.url).port
    assert f"  Web client http://127.0.0.1:{port}/\n" in server.log()  # the start banner


#: `import ... from "./name.js";` in a module of the client (over several lines too).
IMPORT = re.compile(r"^import\b[^;]*?\bfrom\s*\"([^\"]+)\";", re.MULTILINE)


#: The vendored libraries (chatsvc/web/vendor/README.md) and the one module importing them.
VENDORED = {
    "vendor/marked/marked.esm.js": "message-text.js",
    "vendor/dompurify/purify.es.mjs": "message-text.js",
    "vendor/highlight/highlight.min.js": "message-text.js",
}


def module_imports() -> dict[str, list[str]]:
    """Each module of ``chatsvc/web`` and the modules of its own it imports."""
    graph: dict[str, list[str]] = {}
    for path in sorted(WEB.glob("*.js")):
        imports = [name.removeprefix("./") for name in IMPORT.findall(path.read_text())]
        vendored = [name for name in imports if name in VENDORED]
        assert all(VENDORED[name] == path.name for name in vendored), path.name
        own = [name for name in imports if name not in VENDORED]
        assert all(re.fullmatch(r"[a-z-]+\.js", name) for name in own), path.name
        graph[path.name] = own
    return graph


#: The client's modules, each importing only modules after it (as docs/architecture.md
#: lists them): no cycle, and a new module fails the check until it is placed on purpose.
MODULES = [
    "app.js",
    "shortcuts.js",
    "share.js",
    "auth.js",
    "dialogs.js",
    "share-links.js",
    "chat-settings.js",
    "branches.js",
    "chat.js",
    "composer.js",
    "chat-list.js",
    "tree.js",
    "json-patch.js",
    "feedback.js",
    "messages.js",
    "message-actions.js",
    "message-text.js",
    "usage.js",
    "transfer.js",
    "connection.js",
    "api.js",
    "words.js",
    "state.js",
    "dom.js",
]


def test_the_client_is_native_modules_that_app_js_imports() -> None:
    """app.js, the page's one script (with share.js, the share page's), reaches every
    module; imports point one way, down ``MODULES``; nothing is shared through ``window``
    (issue 14, point 7)."""
    graph = module_imports()
    assert sorted(graph) == sorted(MODULES)
    for name, imports in graph.items():
        below = MODULES[MODULES.index(name) + 1 :]
        assert [imported for imported in imports if imported not in below] == [], name
    reached, todo = set(), ["app.js", "share.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert reached == set(MODULES)  # no module left out
    for name in MODULES:
        text = (WEB / name).read_text()
        assert not re.search(r"\bwindow\.(?!addEventListener\b)|globalThis|\bimport\(", text), name
        assert '"use strict"' not in text, name  # modules are strict already


def test_the_modules_load_under_the_pages_policy(server: Server, page: Page) -> None:
    """Chromium loads every module (as JavaScript, under the page's CSP) and the page runs:
    it shows the login form; no module leaks a name onto ``window``."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    loaded: dict[str, tuple[int, str]] = {}

    def record(response: Response) -> None:
        path = urlsplit(response.url).path
        if path.endswith((".js", ".mjs")):
            kind = response.headers.get("content-type", "")
            loaded[path.removeprefix("/static/")] = (response.status, kind)

    page.on("response", record)
    page.goto(server.url)
    expect(page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
    # Every module but the share page's own entry point (tests/test_web_client_shares.py).
    assert loaded.keys() == (module_imports().keys() - {"share.js"}) | VENDORED.keys()
    assert all(status == 200 and "javascript" in kind for status, kind in loaded.values()), loaded
    names = ["api", "state", "treePanel", "TreePanel", "applyJsonPatch", "signOut", "connect"]
    assert page.evaluate("(names) => names.filter((name) => name in window)", names) == []
    assert problems == []


# --- logging in, sending, streaming -------------------------------------------------------


def test_register_send_and_see_the_reply_stream(server: Server, page: Page) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url)
    username = unique_username("web")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#whoami")).to_have_text(username)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

    box = composer(page)
    box.fill("First line")
    box.press("Shift+Enter")  # a new line, not a send
    box.press_sequentially(f"second line {directive(tokens=40, rate=20)}")
    expect(page.locator(USER)).to_have_count(0)
    content = box.input_value()
    assert content.startswith("First line\nsecond line")
    box.press("Enter")

    wait_for_partial_reply(page, "t5 ")
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()

    token = page.evaluate("localStorage.getItem('chatsvc.token')")
    user = User(0, username, PASSWORD, token, server)
    question, answer = stored_messages(user, chat_id_of(page))
    assert question["content"] == content
    assert body_text(page, USER) == content
    assert answer["status"] == "complete"
    assert answer["content"] == Script(tokens=40).expected_text()
    assert body_text(page, ASSISTANT) == answer["content"]
    # The new chat is titled with the first line, in the header and the list.
    expect(page.locator("#chat-title")).to_have_text("First line")
    expect(page.locator("#chat-list [aria-current='page']")).to_have_text("First line")
    # Everything the page loaded came from the server it was served by.
    assert requested
    assert all(url.startswith(server.url + "/") for url in requested), requested


def test_stop_keeps_the_partial_reply_marked_stopped_across_a_reload(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    marker = f"stop-{time.monotonic_ns()}"
    send(page, f"{marker} {directive(tokens=200, rate=20)}")
    wait_for_partial_reply(page, "t3 ")
    page.get_by_role("button", name="Stop", exact=True).click()

    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "aborted")
    expect(reply.locator(".mark")).to_have_text("stopped")
    _, answer = stored_messages(user, chat_id_of(page))
    assert answer["status"] == "aborted"
    assert answer["content"].startswith("t0 t1 t2 t3 ")
    assert answer["content"] != Script(tokens=200).expected_text()
    assert body_text(page, ASSISTANT) == answer["content"]
    fake_llm.wait_for(lambda: fake_llm.find(marker).disconnected, what="the upstream closed")

    page.reload()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "aborted")
    expect(reply.locator(".mark")).to_have_text("stopped")
    assert body_text(page, ASSISTANT) == answer["content"]
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()


LENGTH_NOTE = "Stopped at the length limit: the reply is longer than the model may write at once."


def expect_cut_at_length(page: Page) -> Locator:
    """The last reply is shown stopped at the length limit, in words and to screen readers."""
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".mark")).to_have_text("length limit")
    expect(reply.locator(".note")).to_have_text(LENGTH_NOTE)
    expect(
        page.get_by_role("article", name="Assistant, stopped at the length limit", exact=True)
    ).to_have_count(1)
    expect(reply).to_have_attribute("data-cut", "length")
    return reply


def test_a_reply_cut_at_the_length_limit_says_so_live_and_after_a_reload(
    server: Server, page: Page
) -> None:
    """Issue 13, point 5: a reply that ended with finish reason `length` does not pass
    for a finished one; "Continue" asks for the rest in a new message."""
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"a long story {directive(tokens=5, finish_reason='length')}")
    expect_cut_at_length(page)  # live, from the `done` event
    screenshot(page, "reply-cut-at-length")
    _, answer = stored_messages(user, chat_id_of(page))
    assert (answer["status"], answer["finish_reason"]) == ("complete", "length")
    assert body_text(page, ASSISTANT) == answer["content"] == Script(tokens=5).expected_text()

    page.reload()
    expect_cut_at_length(page)  # from the stored message
    assert body_text(page, ASSISTANT) == answer["content"]

    page.get_by_role("button", name="Continue", exact=True).click()
    expect(page.locator(ASSISTANT)).to_have_count(2)
    last = page.locator(ASSISTANT).last
    expect(last).to_have_attribute("data-status", "complete")
    expect(page.locator(USER).last.locator(":scope > .body")).to_have_text("Continue")
    # A finished reply carries no mark; the cut one keeps its own, without the button.
    expect(last.locator(".mark")).to_have_count(0)
    expect(last.locator(".note")).to_have_count(0)
    expect(last).not_to_have_attribute("data-cut", re.compile(".*"))
    expect(page.locator(ASSISTANT).first.locator(".mark")).to_have_text("length limit")
    expect(page.get_by_role("button", name="Continue")).to_have_count(0)
    contents = [m["content"] for m in stored_messages(user, chat_id_of(page))]
    assert contents[2] == "Continue"
    assert [m["finish_reason"] for m in stored_messages(user, chat_id_of(page))][3] == "stop"


def test_a_reply_stopped_at_the_tool_round_limit_says_so(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"loop {directive(loop_tools=True)}")
    for _ in range(2):  # live, then from the stored message
        reply = page.locator(ASSISTANT).last
        expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
        expect(reply.locator(".mark")).to_have_text("tool limit")
        expect(reply.locator(".note")).to_have_text(
            "Stopped at the limit of workspace tree tool rounds for one reply."
        )
        expect(reply).to_have_attribute("aria-label", "Assistant, stopped at the tool round limit")
        expect(reply).to_have_attribute("data-cut", "tool_rounds_exceeded")
        page.reload()
    _, answer = stored_messages(user, chat_id_of(page))
    assert answer["finish_reason"] == "tool_rounds_exceeded"


def test_a_second_page_follows_the_stream_live_and_escape_stops_it(
    server: Server, page: Page
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"hello {directive(tokens=3)}")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    chat_id = chat_id_of(page)

    second = page.context.new_page()  # another tab of the same browser: logged in already
    second.goto(f"{server.url}/#/chat/{chat_id}")
    expect(second.locator(ASSISTANT)).to_have_count(1)
    expect(second.locator("#connection")).to_have_attribute("data-state", "connected")

    send(page, f"go on {directive(tokens=200, rate=20)}")
    expect(second.locator(USER).last).to_contain_text("go on")
    wait_for_partial_reply(second, "t4 ")
    second.keyboard.press("Escape")  # stops the reply started by the other tab

    for tab in (page, second):
        reply = tab.locator(ASSISTANT).last
        expect(reply).to_have_attribute("data-status", "aborted")
        expect(reply.locator(".mark")).to_have_text("stopped")
    _, _, _, answer = stored_messages(user, chat_id)
    assert answer["status"] == "aborted"
    assert body_text(page, ASSISTANT) == answer["content"]
    assert body_text(second, ASSISTANT) == answer["content"]
    second.close()


def test_a_dropped_connection_reconnects_and_the_reply_continues(
    server: Server, page: Page
) -> None:
    """The network between browser and server is cut mid-reply (a TCP proxy drops every
    connection and refuses new ones), then restored: the page reconnects, subscribes,
    gets a snapshot and shows the rest of the reply."""
    user = register_and_login(server)
    sockets: list[WebSocket] = []
    received: dict[int, list[str]] = {}

    def opened(ws: WebSocket) -> None:
        index = len(sockets)
        sockets.append(ws)
        received[index] = []
        ws.on("framereceived", lambda payload: received[index].append(str(payload)))

    page.on("websocket", opened)
    target = urlsplit(server.url)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 80) as proxy:
        log_in(page, f"http://127.0.0.1:{proxy.port}/", user)
        script = Script(tokens=200, rate=20)
        send(page, f"long {directive(tokens=script.tokens, rate=script.rate)}")
        wait_for_partial_reply(page, "t3 ")
        proxy.down()
        expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
        time.sleep(1)
        proxy.up()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        reply = page.locator(ASSISTANT).last
        expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
        chat_id = chat_id_of(page)

    _, answer = stored_messages(user, chat_id)
    assert answer["content"] == script.expected_text()
    assert body_text(page, ASSISTANT) == answer["content"]
    # A later socket followed the running reply: a snapshot, then more tokens.
    later = [frame for index in range(1, len(sockets)) for frame in received[index]]
    kinds = [json.loads(frame)["type"] for frame in later]
    assert "snapshot" in kinds, kinds
    assert "token" in kinds[kinds.index("snapshot") :], kinds
    assert kinds[-1] == "done", kinds


# --- rendering ------------------------------------------------------------------------------


class HeldSubscribe:
    """Sits between the page's WebSockets and the server and holds back the page's
    ``subscribe`` to ``chat_id``, and every frame after it, until ``release()``: a
    subscription the server is slow to take."""

    def __init__(self, page: Page, chat_id: str) -> None:
        self.chat_id = chat_id
        self.held: list[str | bytes] = []
        self.holding = True
        self._server: WebSocketRoute | None = None
        page.route_web_socket(re.compile(r"/ws\?"), self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()  # what the server sends reaches the page unchanged
        self._server = server

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            subscribing = frame.get("action") == "subscribe" and frame["chat_id"] == self.chat_id
            if self.holding and (self.held or subscribing):
                self.held.append(message)
            else:
                server.send(message)

        ws.on_message(from_page)

    def release(self) -> None:
        assert self._server is not None
        self.holding = False
        for message in self.held:
            self._server.send(message)


def test_a_chat_whose_reply_ends_while_the_page_subscribes_shows_how_it_ended(
    server: Server, page: Page
) -> None:
    """The page fetches the history only once its subscription holds (as the tree panel
    does): a reply that ends before the server takes the `subscribe` is shown as ended,
    not left `streaming` forever for want of its `aborted` event."""
    user = register_and_login(server)
    with Socket(user) as socket:
        started = socket.start(f"long {directive(tokens=2000, rate=20)}")
        socket.until(lambda f: f["type"] == "token")
    chat_id = started["chat_id"]
    held = HeldSubscribe(page, chat_id)
    log_in(page, f"{server.url}/#/chat/{chat_id}", user)
    while not held.held:  # the page subscribes once its socket is ready
        page.wait_for_timeout(50)
    page.wait_for_timeout(1500)  # room for a history fetch that does not wait for it
    with user.client() as client:
        stopped = client.post(f"/api/chats/{chat_id}/abort")
    assert stopped.status_code == 200, stopped.text
    answer = stopped.json()["message"]
    assert answer["status"] == "aborted"
    held.release()

    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "aborted")
    expect(reply.locator(".mark")).to_have_text("stopped")
    assert body_text(page, ASSISTANT) == answer["content"]
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()


def test_replies_show_paragraphs_and_code_blocks(echo_server: Server, page: Page) -> None:
    """Also takes the screenshots of the chat page (wide and narrow) for tests/artifacts/."""
    user = register_and_login(echo_server)
    with user.client() as client:
        for title in ("Release checklist", "Trip to Lisbon"):
            assert client.post("/api/chats", json={"title": title}).status_code == 201
    log_in(page, echo_server.url, user)
    code = "for i in range(3):\n    print(i)"
    message = (
        "How do I print the numbers 0 to 2 in Python?\n\n"
        f"A `for` loop does it:\n\n```python\n{code}\n```\n\n"
        "Each number goes on its own line."
    )
    send(page, message)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")

    paragraphs = reply.locator(".body > p")
    expect(paragraphs).to_have_count(3)
    expect(paragraphs.nth(0)).to_have_text("Echo: How do I print the numbers 0 to 2 in Python?")
    expect(paragraphs.nth(1).locator("code")).to_have_text("for")
    block = reply.locator(".body > pre > code")
    expect(block).to_have_count(1)
    assert block.text_content() == code
    expect(block).to_have_attribute("data-language", "python")
    expect(page.locator("#chat-list li")).to_have_count(3)
    screenshot(page, "web-client")

    # A narrow screen: no sideways scrolling; the chat list opens from the top bar.
    page.set_viewport_size({"width": 390, "height": 760})
    expect(composer(page)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(page.locator("#chat-list")).to_be_hidden()
    screenshot(page, "web-client-narrow")
    page.get_by_role("button", name="Chats", exact=True).click()
    page.locator("#chat-list button", has_text="Trip to Lisbon").click()
    expect(page.locator("#chat-title")).to_have_text("Trip to Lisbon")
    expect(composer(page)).to_be_visible()


def test_markup_in_messages_and_replies_is_shown_as_text(echo_server: Server, page: Page) -> None:
    dialogs: list[str] = []
    problems: list[str] = []
    requested: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda message: problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requested.append(request.url))
    user = register_and_login(echo_server)
    log_in(page, echo_server.url, user)

    payload = "<img src=x onerror=alert(1)> <script>alert(2)</script> <b>bold</b> &amp;"
    send(page, payload)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")

    # Raw HTML stays text; `&amp;` is Markdown's entity for "&" (issue 17: Markdown).
    shown = payload.replace("&amp;", "&")
    assert body_text(page, USER) == shown
    assert body_text(page, ASSISTANT) == f"Echo: {shown}"
    expect(page.locator("#chat-title")).to_have_text(payload)  # titled by the first line
    expect(page.locator("#chat-list [aria-current='page']")).to_have_text(payload)
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    assert page.locator("#chat-list img, #chat-title img").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    assert not [url for url in requested if urlsplit(url).path == "/x"]
    assert problems == []  # no script error, no blocked inline script (CSP report)


# --- the chat list --------------------------------------------------------------------------


def test_chat_list_search_rename_and_delete(server: Server, page: Page) -> None:
    user = register_and_login(server)
    with user.client() as client:
        for title in ("Alpha notes", "Beta plans", "Gamma"):
            assert client.post("/api/chats", json={"title": title}).status_code == 201
        gamma = client.get("/api/chats", params={"q": "Gamma"}).json()["items"][0]
        reply = client.post(
            f"/api/chats/{gamma['id']}/messages",
            json={"content": f"about a zebra {directive(tokens=2)}"},
        )
        assert reply.status_code == 200, reply.text
    log_in(page, server.url, user)
    chats = page.locator("#chat-list li")
    expect(chats).to_have_count(3)

    search = page.get_by_label("Search chats")
    search.fill("zebra")  # found in a message, not a title (tests/test_web_client_search.py)
    expect(chats).to_have_count(1)
    expect(chats.locator(".hit-title")).to_have_text("Gamma")
    search.fill("nothing like this")
    expect(chats).to_have_count(0)
    expect(page.locator("#list-note")).to_contain_text("Nothing matches")
    search.fill("")
    expect(chats).to_have_count(3)

    page.locator("#chat-list button", has_text="Gamma").click()
    expect(page.locator(ASSISTANT)).to_have_count(1)  # the history
    expect(page.locator(USER)).to_contain_text("about a zebra")

    page.locator("#chat-list button", has_text="Beta plans").click()
    expect(page.locator("#chat-title")).to_have_text("Beta plans")
    page.get_by_role("button", name="Rename", exact=True).click()
    title = page.get_by_label("Title")
    title.fill("Beta, renamed")
    title.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Beta, renamed")
    expect(page.locator("#chat-list button", has_text="Beta, renamed")).to_be_visible()
    chat_id = chat_id_of(page)
    with user.client() as client:
        assert client.get(f"/api/chats/{chat_id}").json()["title"] == "Beta, renamed"

    page.get_by_role("button", name="Delete", exact=True).click()
    page.locator("#delete-dialog").get_by_role("button", name="Delete", exact=True).click()
    expect(chats).to_have_count(2)
    expect(page.locator("#chat-title")).to_have_text("New chat")
    with user.client() as client:
        assert client.get(f"/api/chats/{chat_id}").status_code == 404


def test_the_list_follows_chats_made_and_renamed_elsewhere(server: Server, page: Page) -> None:
    """`chat_created` and `chat_updated` reach every socket of the user: the list shows a
    chat made, and a chat renamed, by another client, while another chat is on screen."""
    user = register_and_login(server)
    with user.client() as client:
        alpha = client.post("/api/chats", json={"title": "Alpha"}).json()
    log_in(page, server.url, user)
    page.locator("#chat-list button", has_text="Alpha").click()
    expect(page.locator("#chat-title")).to_have_text("Alpha")
    with user.client() as client:
        beta = client.post("/api/chats", json={"title": "Beta"}).json()
    expect(page.locator("#chat-list button", has_text="Beta")).to_be_visible()
    with user.client() as client:
        renamed = client.patch(f"/api/chats/{beta['id']}", json={"title": "Beta, renamed"})
        assert renamed.status_code == 200, renamed.text
    expect(page.locator("#chat-list button", has_text="Beta, renamed")).to_be_visible()
    expect(page.locator("#chat-title")).to_have_text("Alpha")  # still the chat on screen
    assert chat_id_of(page) == alpha["id"]


# --- errors -------------------------------------------------------------------------------


def test_errors_are_shown_in_plain_words(server: Server, page: Page) -> None:
    user = register_and_login(server)
    page.goto(server.url)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.locator("#auth-error")).to_have_text("Wrong username or password.")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#auth-error")).to_have_text("A password has 8 to 256 characters.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#auth-error")).to_have_text(
        "That username is already taken. Please choose another one."
    )

    log_in(page, server.url, user)
    send(page, f"fails {directive(tokens=10, rate=20, error_after=3)}")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "failed")
    expect(reply.locator(".mark")).to_have_text("failed")
    expect(reply.locator(".note")).to_have_text(
        "The language model failed while answering. The text so far was kept."
    )
    _, answer = stored_messages(user, chat_id_of(page))
    assert answer["status"] == "failed"
    # The text so far (what came before the upstream's error), as stored.
    assert answer["content"].startswith("t0 ")
    assert "t0 t1 t2 ".startswith(answer["content"])
    assert body_text(page, ASSISTANT) == answer["content"]

    # A chat deleted elsewhere: sending there says so.
    with user.client() as client:
        assert client.delete(f"/api/chats/{chat_id_of(page)}").status_code == 204
    send(page, "anyone there?")
    expect(page.locator("#error-text")).to_have_text(
        "This chat does not exist any more (it may have been deleted in another tab)."
    )
    expect(composer(page)).to_have_value("anyone there?")  # given back
