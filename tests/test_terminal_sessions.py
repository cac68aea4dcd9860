"""``chatsvc chat`` keeps its session alive and knows when it has ended (issue 16, point 1).

With access tokens of a couple of seconds, the client renews them before they expire,
and when the server closes its socket for an expired token (4401) it opens another with
the new one; a reply sent several lifetimes later streams as usual. A session ended
elsewhere (log out everywhere) ends the client with one line, at the prompt or during
a reply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.fake_openai import directive
from tests.support import Server, register_and_login
from tests.support.waiting import wait_until
from tests.test_audit import audit_lines
from tests.test_terminal_client import (
    PROMPT,
    ends_with_status,
    log_in,
    spawn_client,
    transcript,
)

REFRESHED = '"POST /api/auth/refresh HTTP/1.1" 200'
SOCKET_OPENED = '"WebSocket /ws" [accepted]'


def count(server: Server, needle: str) -> int:
    return server.log().count(needle)


def test_the_client_renews_its_token_and_reopens_its_socket(
    spawn_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn_server(JWT_TTL_SECONDS="3", ECHO_TOKEN_DELAY="0.01")
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, "--user", user.username)
    log_in(child)
    child.expect_exact("No chats yet")
    child.expect_exact(PROMPT)
    opened = count(server, SOCKET_OPENED)

    # Several access tokens later (about 2 s each), the session still holds: the client
    # renewed each before its end, and reopened the socket the server closed (4401).
    wait_until(lambda: count(server, REFRESHED) >= 4, timeout=30, what="four refreshes")
    wait_until(
        lambda: count(server, SOCKET_OPENED) >= opened + 2, timeout=30, what="sockets reopened"
    )
    child.sendline("still here")
    child.expect_exact("assistant: Echo: still here")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    output = ends_with_status(child, 0)
    assert "connection lost" not in transcript(child) + output
    assert not audit_lines(server, "event=refresh_token_reused")


def test_a_session_ended_elsewhere_ends_the_client(echo_server: Server, tmp_path: Path) -> None:
    user = register_and_login(echo_server)
    child = spawn_client(tmp_path, "--url", echo_server.url, "--user", user.username)
    log_in(child)
    child.expect_exact(PROMPT)
    with user.client() as client:
        assert client.post("/api/auth/logout-all").status_code == 204
    child.sendline("hello?")
    output = ends_with_status(child, 1)
    assert "run `chatsvc chat` again to log in" in output


def test_a_session_ended_during_a_reply_ends_the_client(server: Server, tmp_path: Path) -> None:
    """The server closes the socket of an ended session (4401) while a reply streams on
    it: the client says the session ended and exits 1, rather than 'connection lost' and
    a prompt whose next message would fail."""
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, "--user", user.username)
    log_in(child)
    child.expect_exact(PROMPT)
    child.sendline(f"a long one {directive(tokens=200, rate=10)}")
    child.expect_exact("assistant: t0 ")
    with user.client() as client:
        assert client.post("/api/auth/logout-all").status_code == 204
    output = ends_with_status(child, 1)
    assert "run `chatsvc chat` again to log in" in output
    assert "connection lost" not in transcript(child) + output
