"""Token budgets (issue 16 point 5): ``DAILY_TOKEN_BUDGET``, ``CHAT_TOKEN_BUDGET`` and a
superuser's per-user override. A reply over budget is refused before the upstream is
called (``quota_exceeded``, with the numbers); the one that crosses it finishes; the day
resets at UTC midnight, on a clock the test moves (no sleeping to midnight)."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    PASSWORD,
    AppServer,
    Server,
    Socket,
    User,
    create_account,
    insert_message,
    register_and_login,
    upstream_settings,
)


class TestClock:
    """The time the app's budgets see: the real one until the test sets it."""

    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)


def log_in(page: Page, url: str, user: User) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def mark() -> str:
    return f"quota-{secrets.token_hex(4)}"


def quota_server(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI, **settings: str
) -> tuple[AppServer, TestClock]:
    """An in-process server on the fake upstream with these budgets, and its clock."""
    clock = TestClock()
    server = serve_app(clock=clock, **upstream_settings(fake_llm), AUTO_TITLES="false", **settings)
    return server, clock


def spent_in(user: User, chat_id: str) -> int:
    """The tokens of the chat's stored replies, as the budgets count them."""
    with user.client() as client:
        messages = client.get(f"/api/chats/{chat_id}").json()["messages"]
    return sum(
        (m["usage"]["prompt_tokens"] or 0) + (m["usage"]["completion_tokens"] or 0)
        for m in messages
        if m["role"] == "assistant" and m["usage"]
    )


def daily(user: User) -> dict[str, Any]:
    with user.client() as client:
        me = client.get("/api/me")
    assert me.status_code == 200, me.text
    assert me.json()["username"] == user.username
    return me.json()["daily_tokens"]


def reply(socket: Socket, content: str, **fields: Any) -> dict[str, Any]:
    """Send a message and read to its end; the terminal frame."""
    started = socket.start(content, **fields)
    return socket.until_end(started["task_id"])[-1]


def refusal(socket: Socket, **frame: Any) -> dict[str, Any]:
    socket.send(**frame)
    frames = socket.until(lambda f: f["type"] in ("started", "error"))
    assert frames[-1]["type"] == "error", frames
    return frames[-1]


def next_midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def test_the_daily_budget_refuses_before_the_upstream_and_resets_at_utc_midnight(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    server, clock = quota_server(serve_app, fake_llm, DAILY_TOKEN_BUDGET="60")
    user = register_and_login(server)
    now = datetime.now(UTC)
    clock.at = now
    midnight = next_midnight(now)
    assert daily(user) == {
        "scope": "day",
        "used": 0,
        "budget": 60,
        "resets_at": midnight.isoformat().replace("+00:00", "Z"),
    }

    with Socket(user) as socket:
        # Under the budget, a reply starts, and crosses it: it still ends complete and whole.
        first = mark()
        done = reply(socket, f"{first} {directive(tokens=30, rate=200)}")
        assert done["type"] == "done", done
        assert done["message"]["status"] == "complete"
        assert done["message"]["content"] == Script(tokens=30).expected_text()
        chat_id = done["chat_id"]
        used = spent_in(user, chat_id)
        assert used > 60
        assert daily(user)["used"] == used

        # The next one is refused before any upstream call, with the numbers.
        refused = mark()
        error = refusal(
            socket,
            action="send_message",
            chat_id=chat_id,
            content=f"{refused} hello",
            request_id="r1",
        )
        assert error["code"] == "quota_exceeded"
        assert error["request_id"] == "r1"
        assert error["quota"] == {
            "scope": "day",
            "used": used,
            "budget": 60,
            "resets_at": midnight.isoformat().replace("+00:00", "Z"),
        }
        assert error["retry_after"] == retry_seconds(midnight - now)
        assert f"{used:,} of 60" in error["message"]
        assert "UTC" in error["message"]
        regenerated = refusal(
            socket, action="regenerate", chat_id=chat_id, message_id=done["message"]["id"]
        )
        assert regenerated["code"] == "quota_exceeded"

    # REST: a message to the chat, a new chat with a message, a regeneration.
    with user.client() as client:
        answers = [
            client.post(f"/api/chats/{chat_id}/messages", json={"content": f"{refused} rest"}),
            client.post(
                f"/api/chats/{chat_id}/messages",
                json={"content": f"{refused} sse"},
                headers={"Accept": "text/event-stream"},
            ),
            client.post("/api/chats", json={"content": f"{refused} new chat"}),
            client.post(
                f"/api/chats/{chat_id}/messages/{done['message']['id']}/regenerate", json={}
            ),
        ]
        for answer in answers:
            assert answer.status_code == 429, answer.text
            body = answer.json()
            assert body["code"] == "quota_exceeded"
            assert body["quota"]["used"] == used
            assert body["quota"]["budget"] == 60
            assert int(answer.headers["Retry-After"]) == retry_seconds(midnight - now)
        stored = client.get(f"/api/chats/{chat_id}").json()["messages"]
        chats = client.get("/api/chats").json()["items"]
    assert len(stored) == 2  # no question was stored for a refused reply
    assert [c["id"] for c in chats] == [chat_id]  # nor a chat
    assert fake_llm.records_for(refused) == []
    assert len(fake_llm.records_for(first)) == 1  # the refused regeneration sent nothing

    # A second before midnight it still holds; at midnight the day starts again.
    clock.at = midnight - timedelta(seconds=1)
    assert daily(user)["used"] == used
    with Socket(user) as socket:
        assert refusal(socket, action="send_message", content="late")["code"] == "quota_exceeded"
        clock.at = midnight
        assert daily(user) == {
            "scope": "day",
            "used": 0,
            "budget": 60,
            "resets_at": (midnight + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        }
        again = mark()
        assert reply(socket, f"{again} {directive(tokens=3)}", chat_id=chat_id)["type"] == "done"
    assert len(fake_llm.records_for(again)) == 1


def test_tokens_spent_today_stay_spent_when_their_chat_is_deleted(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    """The day's count is what the replies cost upstream (``daily_spend``): deleting the
    chat they are in gives none of it back, and the budget still refuses."""
    server, _ = quota_server(serve_app, fake_llm, DAILY_TOKEN_BUDGET="60")
    user = register_and_login(server)
    with Socket(user) as socket:
        done = reply(socket, f"{mark()} {directive(tokens=30, rate=200)}")
        assert done["type"] == "done", done
        used = spent_in(user, done["chat_id"])
        assert used > 60
        with user.client() as client:
            assert client.delete(f"/api/chats/{done['chat_id']}").status_code == 204
            assert client.get("/api/chats").json()["items"] == []
        assert daily(user)["used"] == used
        assert refusal(socket, action="send_message", content="more")["code"] == "quota_exceeded"


def retry_seconds(delta: timedelta) -> int:
    """``Retry-After`` for a wait: whole seconds, rounded up (the clock is fixed)."""
    seconds = delta.total_seconds()
    return max(1, int(seconds) + (seconds % 1 > 0))


def test_the_chat_budget_refuses_that_chat_only_and_never_resets(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    server, clock = quota_server(serve_app, fake_llm, CHAT_TOKEN_BUDGET="50")
    user = register_and_login(server)
    with Socket(user) as socket:
        done = reply(socket, f"{mark()} {directive(tokens=20)}")
        assert done["type"] == "done"
        chat_id = done["chat_id"]
        used = spent_in(user, chat_id)
        assert used >= 50

        refused = mark()
        error = refusal(socket, action="send_message", chat_id=chat_id, content=refused)
        assert error["code"] == "quota_exceeded"
        assert error["quota"] == {"scope": "chat", "used": used, "budget": 50, "resets_at": None}
        assert error["retry_after"] is None
        assert "new chat" in error["message"]

        # Another chat has a budget of its own; a new day changes nothing for the first.
        assert reply(socket, f"{mark()} {directive(tokens=2)}")["type"] == "done"
        clock.at = datetime.now(UTC) + timedelta(days=1)
        assert refusal(socket, action="send_message", chat_id=chat_id, content=refused)["code"] == (
            "quota_exceeded"
        )
    with user.client() as client:
        answer = client.post(f"/api/chats/{chat_id}/messages", json={"content": refused})
    assert answer.status_code == 429
    assert answer.json()["quota"]["scope"] == "chat"
    assert "Retry-After" not in answer.headers
    assert fake_llm.records_for(refused) == []
    # Another user's chat is not found, spent or not: its budget is none of their business.
    with register_and_login(server).client() as client:
        foreign = client.post(f"/api/chats/{chat_id}/messages", json={"content": refused})
    assert foreign.status_code == 404
    assert foreign.json()["code"] == "not_found"
    # No daily budget: /api/me counts the day's tokens against none...
    assert daily(user)["budget"] is None
    # ...until the user is given one of their own (the admin's row, written here directly),
    # which today's replies are over (back to today: the clock was moved a day ahead above).
    clock.at = None
    server.db.query(
        "INSERT INTO user_quota (account, daily_token_budget) VALUES (?, ?)", user.id, 1
    )
    assert daily(user)["budget"] == 1
    with Socket(user) as socket:
        assert refusal(socket, action="send_message", content=refused)["quota"]["scope"] == "day"


@contextmanager
def admin_as(server: Server, username: str) -> Iterator[httpx.Client]:
    """An admin session (CSRF cookie sent back as the header)."""
    with server.client() as client:
        assert client.get("/admin/").status_code == 200
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        login = client.post(
            "/admin/public/login/", json={"username": username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        yield client


# Piccolo's session login warns outside production, and this server runs in the test's
# process, under its warnings-are-errors filter.
@pytest.mark.filterwarnings("ignore:If running sessions in production:UserWarning")
def test_a_superusers_override_in_the_admin_wins_over_the_setting(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI
) -> None:
    server, _ = quota_server(serve_app, fake_llm, DAILY_TOKEN_BUDGET="20")
    unlimited, generous, plain = (register_and_login(server) for _ in range(3))
    table = "/admin/api/tables/user_quota/"
    with admin_as(server, create_account(server.db, "--staff")) as staff:
        refused = staff.post(table, json={"account": plain.id, "daily_token_budget": 5})
        assert refused.status_code == 405  # staff read budgets, superusers set them
    with admin_as(server, create_account(server.db, "--superuser")) as superuser:
        for user, budget in ((unlimited, None), (generous, 1_000_000)):
            made = superuser.post(table, json={"account": user.id, "daily_token_budget": budget})
            assert made.status_code in (200, 201), made.text
        rows = superuser.get(table, params={"account": generous.id}).json()["rows"]
        assert [row["daily_token_budget"] for row in rows] == [1_000_000]

    assert daily(unlimited)["budget"] is None  # a row without a budget: no daily limit
    assert daily(generous)["budget"] == 1_000_000
    assert daily(plain)["budget"] == 20
    for user in (unlimited, generous, plain):
        with Socket(user) as socket:
            assert reply(socket, f"{mark()} {directive(tokens=25)}")["type"] == "done"
            second = f"{mark()} {directive(tokens=1)}"
            if user is plain:
                assert (
                    refusal(socket, action="send_message", content=second)["quota"]["budget"] == 20
                )
            else:
                assert reply(socket, second)["type"] == "done"
    assert daily(generous)["used"] > 20


def test_api_me_without_budgets_counts_the_day_against_none(server: Server) -> None:
    user = register_and_login(server)
    tokens = daily(user)
    assert tokens["scope"] == "day"
    assert tokens["used"] == 0
    assert tokens["budget"] is None
    assert tokens["resets_at"].endswith("T00:00:00Z")


def spend(server: AppServer, user: User, tokens: int) -> None:
    """A reply of ``tokens`` stored today in a chat of the user's, and counted in the user's
    day as the reply's end counts it, behind the server's back."""
    with user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "spent"}).json()["id"]
    message_id = insert_message(server.db, chat_id, "earlier", role="assistant")
    server.db.query(
        "UPDATE message SET prompt_tokens = ?, completion_tokens = 0 WHERE id = ?",
        tokens,
        uuid.UUID(message_id),
    )
    day = datetime.now(UTC).date().isoformat()
    server.db.query(
        "INSERT INTO daily_spend (id, account, day, tokens) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET tokens = daily_spend.tokens + excluded.tokens",
        f"{user.id}/{day}",
        user.id,
        day,
        tokens,
    )


def test_the_web_client_shows_the_days_usage_past_80_percent_and_the_refusal(
    serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI, page: Page
) -> None:
    server, _ = quota_server(serve_app, fake_llm, DAILY_TOKEN_BUDGET="1000")
    user = register_and_login(server)
    spend(server, user, 790)
    log_in(page, server.url, user)
    usage = page.locator("#usage")
    expect(usage).to_be_hidden()  # 79 %

    spend(server, user, 160)  # 950: 95 %
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(usage).to_be_visible()
    expect(usage).to_contain_text("Today: 950 of 1,000 tokens used (95 %).")

    # A reply under the budget starts and crosses it; the line then says it is used up.
    box = page.get_by_role("textbox", name="Message", exact=True)
    box.fill(f"{mark()} {directive(tokens=5)}")
    box.press("Enter")
    expect(page.locator("#messages .message[data-role='assistant']").last).to_have_attribute(
        "data-status", "complete"
    )
    used = daily(user)["used"]
    assert used > 1000
    expect(usage).to_contain_text(f"Today's token budget is used up ({used:,} of 1,000 tokens).")

    # The next one is refused in plain words, and its text given back.
    refused = f"{mark()} one more"
    box.fill(refused)
    box.press("Enter")
    expect(page.locator("#error-text")).to_have_text(
        re.compile(
            rf"^You have used up today's token budget \({used:,} of 1,000 tokens\)\. "
            r"Replies start again at .+\.$"
        )
    )
    expect(box).to_have_value(refused)
    assert fake_llm.records_for(refused.split()[0]) == []
    screenshot(page, "web-client-quota")
