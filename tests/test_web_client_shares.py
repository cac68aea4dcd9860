"""Share links in the web client (issue 17, point 3), in headless Chromium: the chat's
"Share" dialog makes a link and lists it; the link opens in a fresh browser context with
no login and shows the conversation, rendered as the chat view renders it (hostile text
stays text, no script runs); a revoked link's page says it is not found. Runs on SQLite
and PostgreSQL (through ``server``)."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from tests.browser import screenshot
from tests.support import Server, register_and_login
from tests.test_web_client import ASSISTANT, log_in, send

HOSTILE = (
    "look <img src=x onerror=\"window.__pwned = 'img'\"> and "
    "<script>window.__pwned = 'script'</script> and **bold**"
)


def test_a_shared_chat_opens_without_login_and_a_revoked_one_is_gone(
    server: Server, page: Page, browser: Browser
) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    send(page, HOSTILE)
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "complete")

    page.get_by_role("button", name="Share", exact=True).click()
    dialog = page.get_by_role("dialog", name="Share chat")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text("No links: nobody can read this chat.")).to_be_visible()
    dialog.get_by_role("button", name="Create link").click()
    link = dialog.get_by_label("Link (shown once: copy it now)")
    expect(link).not_to_have_value("")
    url = link.input_value()
    assert url.startswith(f"{server.url}/share/shr_")
    expect(dialog.locator("#share-list li")).to_have_count(1)
    dialog.get_by_role("button", name="Copy").click()
    expect(dialog.locator("#share-copied")).not_to_have_text("")

    # A fresh context: no token in storage, no login.
    stranger = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        problems: list[str] = []
        shared = stranger.new_page()
        shared.on("pageerror", lambda error: problems.append(str(error)))
        shared.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
        shared.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        shared.goto(url)
        expect(shared.locator("body")).to_have_attribute("data-state", "shown")
        expect(shared.locator("#shared-note")).to_contain_text(
            "This is a read-only snapshot shared on"
        )
        user_message = shared.locator("#shared-messages .message[data-role='user']")
        # The hostile markup is text on the page, never elements, and nothing of it ran.
        expect(user_message).to_contain_text("<img src=x onerror=")
        expect(user_message).to_contain_text("<script>window.__pwned = 'script'</script>")
        assert user_message.locator("img, script").count() == 0
        expect(shared.locator("#shared-messages .message[data-role='assistant']")).to_have_count(1)
        assert shared.evaluate("() => window.__pwned") is None
        assert problems == []
        screenshot(shared, "shared-chat")

        dialog.get_by_role("button", name="Revoke link").click()
        expect(dialog.locator("#share-list li")).to_have_count(0)
        expect(dialog.get_by_text("No links: nobody can read this chat.")).to_be_visible()

        shared.reload()
        expect(shared.locator("body")).to_have_attribute("data-state", "not-found")
        expect(shared.locator("#shared-note")).to_contain_text("not found")
        expect(shared.locator("#shared-messages .message")).to_have_count(0)
    finally:
        stranger.close()


def test_a_mistyped_link_says_not_found(server: Server, page: Page) -> None:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{server.url}/share/shr_%E0%A4%A")  # not even a valid escape
    expect(page.locator("body")).to_have_attribute("data-state", "not-found")
    expect(page.locator("#shared-note")).to_contain_text("not found")
    assert problems == []
