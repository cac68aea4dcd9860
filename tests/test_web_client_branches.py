"""Conversation trees in the web client (docs/protocol.md section 3.1), in headless Chromium.

Regenerate on a reply, Edit on a user message (in place, then sent again as a new
version), ``< 2/3 >`` between the versions of a message, reasoning collapsed,
``chat_updated`` followed (another tab's branch switch, the model's title), and
the buttons held back while a reply runs. Each test runs on SQLite and
PostgreSQL (through ``server``); replies come from the fake upstream, whose
``timestamps`` script makes every reply's text different.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from playwright.sync_api import Locator, Page, WebSocket, expect

from tests.browser import screenshot
from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    Server,
    User,
    insert_message,
    register_and_login,
)
from tests.test_web_client import (
    ASSISTANT,
    USER,
    body_text,
    chat_id_of,
    composer,
    log_in,
    send,
    stored_messages,
    wait_for_partial_reply,
)

BUSY = "A reply is already being written in this chat. Wait for it to finish, or press Stop."


# --- helpers ----------------------------------------------------------------------------


def marker() -> str:
    return f"branch-{secrets.token_hex(4)}"


def reply_script(tokens: int = 2, **more: Any) -> str:
    """A reply whose text differs every time (each token carries its send time)."""
    return directive(tokens=tokens, timestamps=True, **more)


def chat_of(user: User, chat_id: str) -> dict[str, Any]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def whole_tree(user: User, chat_id: str) -> list[dict[str, Any]]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}/messages", params={"all": "true"})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def finished(page: Page, count: int) -> Locator:
    """The last reply, once ``count`` replies are shown and the last one is complete."""
    expect(page.locator(ASSISTANT)).to_have_count(count)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "complete")
    return reply


def new_reply(page: Page, old_id: str | None) -> Locator:
    """The last reply once it is another one than ``old_id``, and complete."""
    reply = page.locator(ASSISTANT).last
    expect(reply).not_to_have_attribute("data-id", old_id or "")
    expect(reply).to_have_attribute("data-status", "complete")
    return reply


def versions(message: Locator) -> Locator:
    return message.get_by_role("group", name="Version", exact=False)


def expect_version(message: Locator, index: int, count: int) -> None:
    """``message`` shows ``< index/count >``, its ends disabled, with their labels."""
    group = message.get_by_role("group", name=f"Version {index} of {count}", exact=True)
    expect(group).to_be_visible()
    expect(group.locator(".version")).to_have_text(f"{index}/{count}")
    previous = group.get_by_role("button", name="Previous version", exact=True)
    following = group.get_by_role("button", name="Next version", exact=True)
    # `disabled` at an end; while a reply runs they are all `aria-disabled` besides.
    expect(previous).to_have_js_property("disabled", index == 1)
    expect(following).to_have_js_property("disabled", index == count)


def button(message: Locator, name: str) -> Locator:
    return message.get_by_role("button", name=name, exact=True)


def frames_of(page: Page) -> list[dict[str, Any]]:
    """Every frame the page's sockets receive from now on (filled as they come)."""
    frames: list[dict[str, Any]] = []

    def opened(ws: WebSocket) -> None:
        ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", opened)
    return frames


# --- regenerate and versions --------------------------------------------------------------


def test_regenerate_shows_the_new_reply_and_the_arrows_go_back(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    mark = marker()
    send(page, f"{mark} {reply_script()}")
    first = finished(page, 1)
    expect(versions(first)).to_have_count(0)  # one version: no arrows
    first_text = body_text(page, ASSISTANT)
    first_id = first.get_attribute("data-id")
    chat_id = chat_id_of(page)

    button(first, "Regenerate").focus()
    page.keyboard.press("Enter")
    reply = new_reply(page, first_id)  # in place of the first one
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect(button(reply, "Previous version")).to_be_focused()  # not lost with the button
    second_id = reply.get_attribute("data-id")
    second_text = body_text(page, ASSISTANT)
    assert second_text != first_text
    expect_version(reply, 2, 2)
    expect(page.locator(USER)).to_have_count(1)
    expect(versions(page.locator(USER))).to_have_count(0)
    # The server: the new reply is the active leaf, the branch shown; both are kept.
    assert chat_of(user, chat_id)["active_leaf_id"] == second_id
    assert [m["id"] for m in stored_messages(user, chat_id)][1] == second_id
    assert len(whole_tree(user, chat_id)) == 3
    requests = fake_llm.records_for(mark)
    assert len(requests) == 2
    assert requests[0].messages == requests[1].messages  # the same history, again

    button(reply, "Previous version").click()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-id", first_id or "")
    expect_version(reply, 1, 2)
    assert body_text(page, ASSISTANT) == first_text
    # The focus stays on the arrows: "Previous" is disabled now, so on "Next".
    expect(button(reply, "Next version")).to_be_focused()
    assert chat_of(user, chat_id)["active_leaf_id"] == first_id

    page.keyboard.press("Enter")  # "Next version", from the keyboard
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-id", second_id or "")
    expect_version(reply, 2, 2)
    assert body_text(page, ASSISTANT) == second_text
    assert chat_of(user, chat_id)["active_leaf_id"] == second_id

    page.reload()  # as stored
    reply = finished(page, 1)
    expect(reply).to_have_attribute("data-id", second_id or "")
    expect_version(reply, 2, 2)


def test_a_failed_reply_is_written_again(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"{marker()} {directive(tokens=6, rate=20, error_after=2)}")
    failed = page.locator(ASSISTANT).last
    expect(failed).to_have_attribute("data-status", "failed")
    failed_id = failed.get_attribute("data-id")
    button(failed, "Regenerate").click()
    reply = page.locator(ASSISTANT).last
    expect(reply).not_to_have_attribute("data-id", failed_id or "")
    expect(reply).to_have_attribute("data-status", "failed")  # the same script: fails again
    expect_version(reply, 2, 2)
    expect(reply.locator(".note")).to_have_count(1)
    button(reply, "Previous version").click()
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-id", failed_id or "")
    statuses = [m["status"] for m in whole_tree(user, chat_id_of(page))]
    assert statuses == ["complete", "failed", "failed"]


def test_a_new_message_continues_the_version_shown(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"{marker()} {reply_script()}")
    first = finished(page, 1)
    first_text = body_text(page, ASSISTANT)
    button(first, "Regenerate").click()
    expect_version(new_reply(page, first.get_attribute("data-id")), 2, 2)
    button(page.locator(ASSISTANT).last, "Previous version").click()
    expect_version(page.locator(ASSISTANT).last, 1, 2)

    later = marker()
    send(page, f"{later} {reply_script()}")
    finished(page, 2)
    # The upstream got the branch shown: the first reply, not the regenerated one.
    history = fake_llm.find(later).messages
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert history[2]["content"] == first_text


# --- editing ------------------------------------------------------------------------------


def test_edit_and_resend_shows_the_new_branch_and_sends_exactly_its_path(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    one, two, edited = marker(), marker(), marker()
    send(page, f"{one} {reply_script()}")
    finished(page, 1)
    first_reply = body_text(page, ASSISTANT)
    second_message = f"{two} {reply_script()}"
    send(page, second_message)
    old_id = finished(page, 2).get_attribute("data-id")
    chat_id = chat_id_of(page)

    question = page.locator(USER).last
    button(question, "Edit").click()
    editor = page.get_by_role("textbox", name="Edit message", exact=True)
    expect(editor).to_be_focused()
    expect(editor).to_have_value(second_message)
    expect(button(question, "Save & send")).to_be_visible()
    expect(button(question, "Edit")).to_have_count(0)
    editor.fill(f"{edited} first line")
    editor.press("Shift+Enter")  # a new line, not a send
    editor.press_sequentially(f"second line {reply_script(tokens=3)}")
    assert fake_llm.records_for(edited) == []
    new_text = editor.input_value()
    assert "\nsecond line" in new_text
    editor.press("Enter")

    question = page.locator(USER).last
    expect(question.locator(":scope > .body")).to_have_text(new_text)
    reply = new_reply(page, old_id)
    expect(page.locator(ASSISTANT)).to_have_count(2)
    expect(page.locator(USER)).to_have_count(2)
    expect(editor).to_have_count(0)
    expect(composer(page)).to_be_focused()
    expect_version(question, 2, 2)
    expect(versions(reply)).to_have_count(0)  # the reply of the new version: the only one
    # The upstream got exactly the new path: the first exchange, then the edited message.
    history = fake_llm.find(edited).messages
    assert [(m["role"], m["content"]) for m in history[1:]] == [
        ("user", f"{one} {reply_script()}"),
        ("assistant", first_reply),
        ("user", new_text),
    ]
    assert [m["content"] for m in stored_messages(user, chat_id)][2] == new_text
    assert len(whole_tree(user, chat_id)) == 6  # the old branch is kept

    button(question, "Previous version").click()
    question = page.locator(USER).last
    expect(question.locator(":scope > .body")).to_have_text(second_message)
    expect_version(question, 1, 2)


def test_escape_cancels_an_edit_and_nothing_is_sent(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    content = f"{marker()} {reply_script()}"
    send(page, content)
    finished(page, 1)
    chat_id = chat_id_of(page)

    question = page.locator(USER).last
    button(question, "Edit").click()
    editor = page.get_by_role("textbox", name="Edit message", exact=True)
    editor.fill("not sent")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(question.locator(":scope > .body")).to_have_text(content)
    expect(button(question, "Edit")).to_be_focused()
    button(question, "Edit").click()  # the editor opens on the message's own text again
    expect(editor).to_have_value(content)
    button(question, "Cancel").click()
    expect(editor).to_have_count(0)
    assert len(whole_tree(user, chat_id)) == 2
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")


# --- reasoning ----------------------------------------------------------------------------


def test_reasoning_is_collapsed_live_and_after_a_reload(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"{marker()} {directive(tokens=2, reasoning=3)}")
    for _ in range(2):  # live, then from the stored message
        reply = finished(page, 1)
        thinking = reply.locator("details.reasoning")
        expect(thinking).to_have_count(1)
        expect(thinking).not_to_have_attribute("open", "")
        expect(thinking.locator("summary")).to_have_text("Thinking")
        expect(thinking.locator(".body")).to_be_hidden()
        assert body_text(page, ASSISTANT) == "t0 t1 "
        page.reload()
    reply = finished(page, 1)
    reply.locator("details.reasoning summary").click()
    expect(reply.locator("details.reasoning .body")).to_have_text("r0 r1 r2 ")
    assert stored_messages(user, chat_id_of(page))[1]["reasoning"] == "r0 r1 r2 "


def test_reasoning_opened_while_it_streams_stays_open(server: Server, page: Page) -> None:
    """A streaming reply is drawn again with every few tokens: a click on "Thinking" opens
    it even when the reply is drawn again between the press and the release (as a person's
    click, a tenth of a second long, nearly always is), and it stays open."""
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"{marker()} {directive(tokens=2, reasoning=60, rate=20)}")
    thinking = page.locator(ASSISTANT).last.locator("details.reasoning")
    expect(thinking.locator(".body")).to_contain_text("r2 ")
    thinking.locator("summary").hover()
    page.mouse.down()
    expect(thinking.locator(".body")).to_contain_text("r6 ")  # drawn again, button held
    page.mouse.up()
    expect(thinking.locator(".body")).to_contain_text("r10 ")  # drawn again since
    expect(thinking).to_have_attribute("open", "")
    reply = finished(page, 1)
    expect(reply.locator("details.reasoning")).to_have_attribute("open", "")
    expect(reply.locator("details.reasoning .body")).to_contain_text("r59 ")


# --- another tab, titles ------------------------------------------------------------------


def test_a_second_tab_follows_regenerate_and_a_branch_switch(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, f"{marker()} {reply_script()}")
    first = finished(page, 1)
    first_text = body_text(page, ASSISTANT)
    chat_id = chat_id_of(page)

    second = page.context.new_page()  # another tab of the same browser: logged in already
    heard = frames_of(second)
    second.goto(f"{server.url}/#/chat/{chat_id}")
    expect(second.locator("#connection")).to_have_attribute("data-state", "connected")
    finished(second, 1)
    second.evaluate("document.body.dataset.loadedOnce = 'yes'")  # gone if the page reloads

    first_id = first.get_attribute("data-id")
    button(first, "Regenerate").click()  # in the first tab
    expect_version(new_reply(page, first_id), 2, 2)
    regenerated = body_text(page, ASSISTANT)
    assert regenerated != first_text
    expect_version(new_reply(second, first_id), 2, 2)
    assert body_text(second, ASSISTANT) == regenerated

    button(page.locator(ASSISTANT).last, "Previous version").click()  # in the first tab
    expect_version(second.locator(ASSISTANT).last, 1, 2)
    assert body_text(second, ASSISTANT) == first_text
    switched = [f for f in heard if f["type"] == "chat_updated" and f["request_id"] is None]
    assert switched, [f["type"] for f in heard]
    assert switched[-1]["chat"]["active_leaf_id"] == chat_of(user, chat_id)["active_leaf_id"]
    assert second.evaluate("document.body.dataset.loadedOnce") == "yes"
    second.close()


def test_the_models_title_reaches_the_header_and_the_list(titled: Server, page: Page) -> None:
    user = register_and_login(titled)
    log_in(page, titled.url, user)
    send(page, f"{marker()} plan a trip {directive(tokens=2, unstreamed_text='Trip plans')}")
    finished(page, 1)
    expect(page.locator("#chat-title")).to_have_text("Trip plans")
    expect(page.locator("#chat-list [aria-current='page']")).to_have_text("Trip plans")
    expect(page).to_have_title("Trip plans · chatsvc")
    assert chat_of(user, chat_id_of(page))["title"] == "Trip plans"


# --- busy, and chats from before trees ------------------------------------------------------


def test_nothing_branches_while_a_reply_runs(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    first_mark = marker()
    send(page, f"{first_mark} {reply_script()}")
    first = finished(page, 1)
    button(first, "Regenerate").click()
    expect_version(new_reply(page, first.get_attribute("data-id")), 2, 2)
    chat_id = chat_id_of(page)

    send(page, f"{marker()} {directive(tokens=400, rate=20)}")
    wait_for_partial_reply(page, "t2 ")
    earlier = page.locator(ASSISTANT).first
    controls = [
        button(earlier, "Regenerate"),
        button(earlier, "Previous version"),
        button(page.locator(USER).first, "Edit"),
    ]
    for control in controls:
        expect(control).to_have_attribute("aria-disabled", "true")
    expect(button(page.locator(ASSISTANT).last, "Regenerate")).to_have_count(0)  # streaming

    for control in controls:  # still focusable, and they say why they do nothing
        control.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#error-text")).to_have_text(BUSY)
        page.locator("#error-close").click()
        expect(page.locator("#error")).to_be_hidden()
    expect(page.get_by_role("textbox", name="Edit message", exact=True)).to_have_count(0)
    assert len(fake_llm.records_for(first_mark)) == 2  # no third request
    assert len(whole_tree(user, chat_id)) == 5
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "streaming")

    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "aborted")
    for control in controls:
        expect(control).not_to_have_attribute("aria-disabled", "true")
    # A stopped reply can be written again too.
    button(page.locator(ASSISTANT).last, "Regenerate").click()
    reply = page.locator(ASSISTANT).last
    expect_version(reply, 2, 2)
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(reply).to_have_attribute("data-status", "aborted")


def test_a_chat_from_before_trees_shows_no_arrows_and_branches(
    server: Server, page: Page, fake_llm: FakeOpenAI
) -> None:
    """A chat whose messages were linked by the migration (no active leaf stored)."""
    user = register_and_login(server)
    with user.client() as client:
        created = client.post("/api/chats", json={"title": "Older chat"})
    assert created.status_code == 201, created.text
    chat_id = created.json()["id"]
    mark = marker()
    insert_message(server.db, chat_id, f"{mark} {reply_script()}")
    insert_message(server.db, chat_id, "An old answer", role="assistant")
    assert chat_of(user, chat_id)["active_leaf_id"] is None

    log_in(page, f"{server.url}/#/chat/{chat_id}", user)
    reply = finished(page, 1)
    expect(reply.locator(":scope > .body")).to_have_text("An old answer")
    expect(page.locator("#messages .versions")).to_have_count(0)

    later = marker()
    send(page, f"{later} {reply_script()}")  # continues it, as before
    finished(page, 2)
    expect(page.locator("#messages .versions")).to_have_count(0)
    assert fake_llm.find(later).messages[2]["content"] == "An old answer"

    old = page.locator(ASSISTANT).first
    old_id = old.get_attribute("data-id")
    button(old, "Regenerate").click()
    reply = new_reply(page, old_id)  # the branch of the new reply: without the later exchange
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect_version(reply, 2, 2)
    expect(page.locator(USER)).to_have_count(1)
    button(reply, "Previous version").click()
    expect(page.locator(ASSISTANT)).to_have_count(2)  # the old branch, as it was
    expect(page.locator(ASSISTANT).first.locator(":scope > .body")).to_have_text("An old answer")
    expect_version(page.locator(ASSISTANT).first, 1, 2)

    # Its first message edited: a new first message (`parent_id` null), with a mouse.
    old_id = page.locator(ASSISTANT).last.get_attribute("data-id")
    first_question = page.locator(USER).first
    button(first_question, "Edit").click()
    fresh = marker()
    page.get_by_role("textbox", name="Edit message", exact=True).fill(f"{fresh} {reply_script()}")
    button(first_question, "Save & send").click()
    new_reply(page, old_id)
    expect(page.locator(USER)).to_have_count(1)
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect_version(page.locator(USER).first, 2, 2)
    history = fake_llm.find(fresh).messages
    assert [(m["role"], m["content"]) for m in history[1:]] == [
        ("user", f"{fresh} {reply_script()}")
    ]
    roots = [m for m in whole_tree(user, chat_id) if m.get("parent_id") is None]
    assert len(roots) == 2


# --- the screenshot -----------------------------------------------------------------------


def test_the_readme_screenshot_shows_a_regenerated_reply(echo_server: Server, page: Page) -> None:
    """The web client's picture in the README (docs/web-client.png): a chat list, a reply
    with a code block and its `< 2/2 >` versions."""
    user = register_and_login(echo_server)
    with user.client() as client:
        for title in ("Release checklist", "Trip to Lisbon"):
            assert client.post("/api/chats", json={"title": title}).status_code == 201
    log_in(page, echo_server.url, user)
    code = "for i in range(3):\n    print(i)"
    send(
        page,
        "How do I print the numbers 0 to 2 in Python?\n\n"
        f"A `for` loop does it:\n\n```python\n{code}\n```\n\n"
        "Each number goes on its own line.",
    )
    first = finished(page, 1)
    button(first, "Regenerate").click()
    reply = new_reply(page, first.get_attribute("data-id"))
    expect_version(reply, 2, 2)
    expect(reply.locator(".body > pre > code")).to_have_text(code)
    expect(page.locator("#chat-list li")).to_have_count(3)
    composer(page).focus()
    screenshot(page, "web-client-branches")
