"""The web client keeps its session alive and ends it (issue 16, point 1), in headless Chromium.

With access tokens of a couple of seconds, the page renews them before they expire and
reconnects its socket after each ``4401`` (the server closes a socket when its token
expires), so a user active across several token lifetimes is never logged out; two tabs
share the session without exchanging one refresh token twice. *Log out* ends the session
on the server; *log out everywhere* from another client signs the page out.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page, expect

from tests.support import Server, register_and_login
from tests.support.http import tls
from tests.test_audit import audit_lines
from tests.test_web_client import ASSISTANT, log_in, send

#: Close codes of every WebSocket the page opens (recorded before the page's own scripts run).
RECORD_CLOSES = """
window.__closes = [];
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener("close", (event) => window.__closes.push(event.code));
  }
};
"""

#: The shortest access token lifetime the settings take (documented as for tests).
ACCESS_SECONDS = "3"


def renewals(page: Page, count: int) -> None:
    """Wait for ``count`` successful refreshes by the tabs of ``page``'s browser context
    (whichever tab's turn it is): each one an event, no sleep."""
    for _ in range(count):
        with page.context.expect_event(
            "response",
            lambda r: r.url.endswith("/api/auth/refresh") and r.status == 200,
            timeout=15_000,
        ):
            pass


def test_a_session_outlives_several_access_tokens(
    spawn_server: Callable[..., Server], page: Page
) -> None:
    server = spawn_server(JWT_TTL_SECONDS=ACCESS_SECONDS, ECHO_TOKEN_DELAY="0.01")
    user = register_and_login(server)
    page.context.add_init_script(RECORD_CLOSES)
    log_in(page, server.url, user)
    first = page.evaluate("localStorage.getItem('chatsvc.token')")
    second_tab = page.context.new_page()
    second_tab.goto(server.url)
    expect(second_tab.locator("#connection")).to_have_attribute("data-state", "connected")

    renewals(page, 5)  # over 3 lifetimes of the first token (about 2 s each)
    with httpx.Client(base_url=server.url, verify=tls()) as client:
        assert client.get("/api/me", headers={"Authorization": f"Bearer {first}"}).status_code == (
            401
        )
    # The sockets were closed with 4401 as their tokens expired, and came back each time.
    page.wait_for_function("window.__closes.filter((code) => code === 4401).length >= 2")
    for tab in (page, second_tab):
        expect(tab.locator("#app-view")).to_be_visible()
        expect(tab.locator("#connection")).to_have_attribute("data-state", "connected")

    # A token lasts 2 s here, so a socket closes every 2 s: a send may meet a closed socket
    # (the client keeps the message and says so, composer.js) or one closing (the frame is
    # lost with it). The user then sends again, as this does, up to three times.
    reply = page.locator(ASSISTANT).last
    refused = page.get_by_text("Not connected to the server. Your message is kept")
    for attempt in range(3):
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        send(page, "still here")
        try:
            expect(reply).to_be_visible(timeout=3_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
            if refused.is_visible():
                page.get_by_role("button", name="Dismiss").click()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(":scope > .body")).to_have_text("Echo: still here")
    # Both tabs renewed the one session in turn: no refresh token was presented twice.
    assert not audit_lines(server, "event=refresh_token_reused")


def test_log_out_ends_the_session_on_the_server(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    refresh = page.evaluate("localStorage.getItem('chatsvc.refresh')")
    assert refresh
    with page.expect_response(lambda r: r.url.endswith("/api/auth/logout")) as logout:
        page.get_by_role("button", name="Log out", exact=True).click()
    assert logout.value.status == 204
    expect(page.locator("#auth-view")).to_be_visible()
    assert page.evaluate("localStorage.getItem('chatsvc.refresh')") is None
    with httpx.Client(base_url=server.url, verify=tls()) as client:
        again = client.post("/api/auth/refresh", json={"refresh_token": refresh})
    assert again.status_code == 401


def test_logging_out_everywhere_elsewhere_signs_the_page_out(server: Server, page: Page) -> None:
    user = register_and_login(server)
    log_in(page, server.url, user)
    with user.client() as client:  # another client of the same user
        assert client.post("/api/auth/logout-all").status_code == 204
    # The socket closes (4401), the refresh is refused: back to the login form, saying why.
    expect(page.locator("#auth-view")).to_be_visible()
    expect(page.locator("#auth-error")).to_contain_text("log in again")
