"""The web client fits people (issue 17 point 6), in headless Chromium: an axe-core audit
of the login, chat, settings, help and share pages in the light and dark themes, wide and at
375 px; keyboard use alone (shortcuts, the help panel, Escape, the focus given back); a
reply announced once when it ends rather than token by token; the messages following
new text only while the reader is at the bottom. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.accessibility import audit
from tests.fake_openai import FakeOpenAI, directive
from tests.support import Server, register_and_login
from tests.test_web_client import ASSISTANT, composer, log_in, send, wait_for_partial_reply

CODE_MESSAGE = (
    "How do I print 0 to 2?\n\nA `for` loop:\n\n```python\nfor i in range(3):\n"
    "    print(i)\n```\n\nOne number a line."
)


def open_page(browser: Browser, scheme: str, width: int) -> Page:
    context = browser.new_context(
        viewport={"width": width, "height": 800 if width > 400 else 740},
        color_scheme="dark" if scheme == "dark" else "light",
    )
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture
def pages(browser: Browser) -> Iterator[list[Page]]:
    """The pages a test opens with :func:`open_page`, closed after it."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.context.close()


def no_sideways_scrolling(page: Page) -> None:
    width, shown = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= shown, f"the page scrolls sideways: {width} px wide in {shown} px"


@pytest.mark.parametrize("width", [1280, 375])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_pass_the_accessibility_audit(
    echo_server: Server, browser: Browser, pages: list[Page], scheme: str, width: int
) -> None:
    page = open_page(browser, scheme, width)
    pages.append(page)
    where = f"{scheme}, {width} px"
    page.goto(echo_server.url)
    expect(page.get_by_label("Username")).to_be_visible()
    # The theme follows the system's: the page's background is dark in the dark scheme.
    dark = page.evaluate(
        """() => {
            const [r, g, b] = getComputedStyle(document.body).backgroundColor
                .match(/\\d+/g).map(Number);
            return r + g + b < 3 * 128;
        }"""
    )
    assert dark == (scheme == "dark")
    audit(page, f"the login page ({where})")
    no_sideways_scrolling(page)

    user = register_and_login(echo_server)
    with user.client() as client:
        assert client.post("/api/chats", json={"title": "Older chat"}).status_code == 201
    log_in(page, echo_server.url, user)
    send(page, CODE_MESSAGE)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator("pre code")).to_have_count(1)
    audit(page, f"the chat page ({where})")
    no_sideways_scrolling(page)
    expect(composer(page)).to_be_visible()

    page.get_by_role("button", name="Settings", exact=True).click()
    expect(page.get_by_role("dialog", name="Chat settings")).to_be_visible()
    audit(page, f"the settings panel ({where})")
    no_sideways_scrolling(page)
    page.keyboard.press("Escape")

    page.get_by_role("button", name="Keyboard shortcuts").click()
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    audit(page, f"the help panel ({where})")
    no_sideways_scrolling(page)
    page.keyboard.press("Escape")

    page.get_by_role("button", name="Share", exact=True).click()
    share = page.get_by_role("dialog", name="Share chat")
    share.get_by_role("button", name="Create link").click()
    link = share.get_by_label("Link (shown once: copy it now)")
    expect(link).not_to_have_value("")
    audit(page, f"the share dialog ({where})")
    no_sideways_scrolling(page)
    shared_url = link.input_value()
    page.keyboard.press("Escape")
    shared = open_page(browser, scheme, width)
    pages.append(shared)
    shared.goto(shared_url)
    expect(shared.locator("body")).to_have_attribute("data-state", "shown")
    expect(shared.locator("pre code")).to_have_count(2)  # the question and its echo
    audit(shared, f"the share page ({where})")
    no_sideways_scrolling(shared)

    if width < 400:  # the chat list over the conversation, and the composer still usable
        page.get_by_role("button", name="Chats", exact=True).click()
        expect(page.locator("#chat-list button", has_text="Older chat")).to_be_visible()
        audit(page, f"the chat list ({where})")
        no_sideways_scrolling(page)
        page.locator("#chat-list button", has_text="Older chat").click()
        expect(page.locator("#chat-title")).to_have_text("Older chat")
        send(page, "Fits on a phone")
        expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
        expect(page.locator(ASSISTANT).last).to_contain_text("Echo: Fits on a phone")
        no_sideways_scrolling(page)


def focused_id(page: Page) -> str:
    return page.evaluate("document.activeElement ? document.activeElement.id : ''")


def test_the_client_works_by_keyboard_alone(
    server: Server, browser: Browser, pages: list[Page]
) -> None:
    page = open_page(browser, "light", 1280)
    pages.append(page)
    user = register_and_login(server)
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": "Keyboard chat"}).json()
    log_in(page, server.url, user)

    # `?` lists the shortcuts; the focus goes in the panel and Escape gives it back.
    page.locator("#new-chat").focus()
    page.keyboard.press("?")
    help_panel = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_panel).to_be_visible()
    expect(help_panel).to_contain_text("New chat")
    expect(help_panel.get_by_role("button", name="Close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(help_panel).to_be_hidden()
    assert focused_id(page) == "new-chat"

    # The focus order: the top bar, the chat list, the conversation, the composer.
    page.locator("#help-button").focus()
    order = ["help-button"]
    while order[-1] != "send-button" and len(order) < 20:
        page.keyboard.press("Tab")
        order.append(focused_id(page) or page.evaluate("document.activeElement.textContent"))
    expected = ["help-button", "logout-button", "new-chat", "search", "Keyboard chat"]
    assert order[:5] == expected, order
    assert order[-3:] == ["messages", "message-input", "send-button"], order
    # A visible focus ring on what the keyboard reached.
    page.locator("#new-chat").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert focused_id(page) == "new-chat"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline

    # Ctrl+K searches from anywhere, even while typing a message; `/` does outside fields.
    composer(page).focus()
    page.keyboard.type("half a thought /")
    expect(composer(page)).to_have_value("half a thought /")  # `/` typed, not a shortcut
    page.keyboard.press("Control+k")
    assert focused_id(page) == "search"
    page.keyboard.type("Keyboard")
    expect(page.locator("#chat-list li")).to_have_count(1)
    page.keyboard.press("Tab")  # the chat found
    page.keyboard.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Keyboard chat")
    assert chat["id"] in page.url
    page.locator("#chat-title").click()  # the focus out of every field
    page.keyboard.press("/")
    assert focused_id(page) == "search"

    # Ctrl+Shift+O: a new chat, the focus in its composer.
    page.keyboard.press("Control+Shift+O")
    expect(page.locator("#chat-title")).to_have_text("New chat")
    assert chat["id"] not in page.url
    assert focused_id(page) == "message-input"

    # The help panel opens from its button too; its single-key shortcuts can be turned off.
    page.keyboard.press("Shift+Tab")
    while focused_id(page) != "help-button":
        page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(help_panel).to_be_visible()
    page.keyboard.press("Shift+Tab")
    assert focused_id(page) == "single-keys"
    page.keyboard.press("Space")
    expect(help_panel.get_by_role("checkbox")).not_to_be_checked()
    page.keyboard.press("Escape")
    assert focused_id(page) == "help-button"
    page.locator("#chat-title").click()
    page.keyboard.press("?")
    expect(help_panel).to_be_hidden()
    page.keyboard.press("/")
    assert focused_id(page) != "search"
    page.keyboard.press("Control+k")  # with a modifier: still on
    assert focused_id(page) == "search"


def test_narrow_panels_close_with_escape_and_give_the_focus_back(
    server: Server, browser: Browser, pages: list[Page]
) -> None:
    page = open_page(browser, "dark", 375)
    pages.append(page)
    user = register_and_login(server)
    log_in(page, server.url, user)
    chats = page.get_by_role("button", name="Chats", exact=True)
    chats.focus()
    page.keyboard.press("Enter")
    expect(chats).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#search")).to_be_visible()
    page.keyboard.press("Escape")
    expect(chats).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#search")).to_be_hidden()
    expect(chats).to_be_focused()
    # Ctrl+K opens the list to search it; Escape closes it again.
    page.keyboard.press("Control+k")
    expect(page.locator("#search")).to_be_focused()
    expect(chats).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")  # the search box's own Escape empties it, the next closes
    page.keyboard.press("Escape")
    expect(chats).to_have_attribute("aria-expanded", "false")
    expect(chats).to_be_focused()
    tree = page.get_by_role("button", name="Tree", exact=True)
    tree.focus()
    page.keyboard.press("Enter")
    expect(tree).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(tree).to_have_attribute("aria-expanded", "false")
    expect(tree).to_be_focused()
    no_sideways_scrolling(page)


SCROLL_STATE = """() => {
    const box = document.getElementById("messages");
    return {top: box.scrollTop, height: box.scrollHeight, client: box.clientHeight};
}"""


def at_bottom(page: Page) -> bool:
    box = page.evaluate(SCROLL_STATE)
    return box["height"] - box["top"] - box["client"] < 4


def test_a_reply_is_announced_once_and_followed_only_from_the_bottom(
    server: Server, browser: Browser, pages: list[Page], fake_llm: FakeOpenAI
) -> None:
    page = open_page(browser, "light", 1280)
    pages.append(page)
    user = register_and_login(server)
    log_in(page, server.url, user)
    messages = page.locator("#messages")
    # Not a live region (a streaming reply would be read token by token): one announcement.
    assert messages.get_attribute("aria-live") is None
    assert messages.get_attribute("role") != "log"
    announcer = page.locator("#announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")

    send(page, f"long {directive(tokens=600, rate=60, pad=30)}")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply).to_have_attribute("aria-busy", "true")
    page.wait_for_function(
        """() => { const box = document.getElementById("messages");
                   return box.scrollHeight > box.clientHeight + 600; }"""
    )
    assert at_bottom(page)  # followed while the reader is at the bottom
    assert (announcer.text_content() or "") == ""  # nothing said while it streams

    # The reader scrolls up: the text keeps coming, the view stays where it is.
    messages.hover()
    page.mouse.wheel(0, -400)
    page.wait_for_function(
        """() => { const box = document.getElementById("messages");
                   return box.scrollHeight - box.scrollTop - box.clientHeight > 300; }"""
    )
    page.wait_for_timeout(200)  # the wheel's smooth scrolling settled
    before = page.evaluate(SCROLL_STATE)
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    page.wait_for_function(
        "(h) => document.getElementById('messages').scrollHeight > h + 200", arg=before["height"]
    )
    assert page.evaluate(SCROLL_STATE)["top"] == before["top"]
    expect(reply).to_have_attribute("data-status", "streaming")

    # Back at the bottom (the button, by keyboard), it follows again.
    jump.focus()
    page.keyboard.press("Enter")
    expect(jump).to_be_hidden()
    expect(composer(page)).to_be_focused()
    assert at_bottom(page)
    height = page.evaluate(SCROLL_STATE)["height"]
    page.wait_for_function(
        "(h) => document.getElementById('messages').scrollHeight > h + 200", arg=height
    )
    assert at_bottom(page)

    # Once it ends, its text is announced once, politely.
    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(reply).to_have_attribute("aria-busy", "false")
    expect(announcer).to_contain_text("Assistant replied: t0")
    said = announcer.text_content() or ""  # a long reply: its start (the page has the rest)
    assert said.endswith("…"), said[-80:]
    assert 4000 < len(said) < 4100, len(said)
    assert at_bottom(page)

    # Scrolled up, sending a message follows the conversation again.
    messages.hover()
    page.mouse.wheel(0, -600)
    expect(page.get_by_role("button", name="Jump to latest")).to_be_visible()
    send(page, f"short {directive(tokens=3)}")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")
    expect(announcer).to_have_text("Assistant replied: t0 t1 t2")
    assert at_bottom(page)

    # Stopped, a reply says so.
    send(page, f"again {directive(tokens=400, rate=20)}")
    wait_for_partial_reply(page, "t1 ")
    page.keyboard.press("Escape")
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "aborted")
    expect(announcer).to_contain_text("Assistant reply stopped: t0")
