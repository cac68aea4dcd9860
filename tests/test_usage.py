"""Usage you can account for (issue 16): every reply stores its prompt and completion
tokens, the model server's or else an estimate marked ``estimated``; ``GET /api/usage``
sums the stored replies by UTC day, chat or model, for their user only (a superuser may
read anyone's); ``chatsvc_tokens_total`` counts them; superusers read them in the admin."""

from __future__ import annotations

import json
import math
import secrets
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    OTHER_MODEL,
    PASSWORD,
    Server,
    Socket,
    User,
    create_account,
    register_and_login,
    wait_until,
)
from tests.test_observability import metrics, value

SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "replies", "estimated_replies")


def mark() -> str:
    return f"usage-{secrets.token_hex(4)}"


def usage(user: User, **params: Any) -> httpx.Response:
    with user.client() as client:
        return client.get("/api/usage", params=params)


def report(user: User, **params: Any) -> dict[str, Any]:
    response = usage(user, **params)
    assert response.status_code == 200, response.text
    return response.json()


def send(user: User, chat_id: str, content: str) -> dict[str, Any]:
    """A message through the waiting REST route; the reply as stored."""
    with user.client() as client:
        response = client.post(f"/api/chats/{chat_id}/messages", json={"content": content})
    assert response.status_code == 200, response.text
    return response.json()["message"]


def new_chat(user: User, **fields: Any) -> str:
    with user.client() as client:
        response = client.post("/api/chats", json=fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def stored_replies(user: User) -> list[dict[str, Any]]:
    """Every assistant message of the user's chats, every branch, as the API shows them."""
    found: list[dict[str, Any]] = []
    with user.client() as client:
        chats = client.get("/api/chats", params={"limit": 200}).json()["items"]
        for chat in chats:
            page = client.get(
                f"/api/chats/{chat['id']}/messages", params={"all": "true", "limit": 200}
            ).json()
            assert page.get("next_cursor") is None
            found += [
                {**m, "title": chat["title"]} for m in page["items"] if m["role"] == "assistant"
            ]
    return found


def expected_groups(replies: list[dict[str, Any]], group_by: str) -> dict[str, dict[str, Any]]:
    """The sums ``GET /api/usage`` should give, made here from the stored messages."""
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for reply in replies:
        if reply["status"] == "streaming":
            continue
        key = {
            "day": reply["created_at"][:10],
            "chat": reply["chat_id"],
            "model": reply["model"] or "",
        }[group_by]
        sums, figures = groups[key], reply["usage"] or {}
        sums["prompt_tokens"] += figures.get("prompt_tokens") or 0
        sums["completion_tokens"] += figures.get("completion_tokens") or 0
        sums["total_tokens"] = sums["prompt_tokens"] + sums["completion_tokens"]
        sums["replies"] += 1
        sums["estimated_replies"] += bool(figures.get("estimated"))
    return dict(groups)


def insert_reply(
    server: Server,
    chat_id: str,
    created_at: datetime,
    *,
    prompt: int | None,
    completion: int | None,
    estimated: bool | None,
    status: str = "complete",
    model: str = "fake-model",
    instance: str | None = None,
) -> str:
    """A reply stored behind the API's back (on another day than today); its id."""
    message_id = uuid.uuid4()
    server.db.query(
        "INSERT INTO message (id, chat, owner, role, content, status, model, prompt_tokens, "
        "completion_tokens, usage_estimated, created_at, instance) "
        "VALUES (?, ?, (SELECT owner FROM chat WHERE id = ?), 'assistant', 'stored before', "
        "?, ?, ?, ?, ?, ?, ?)",
        message_id,
        uuid.UUID(chat_id),
        uuid.UUID(chat_id),
        status,
        model,
        prompt,
        completion,
        estimated,
        created_at,
        instance,
    )
    return str(message_id)


def live_instance(server: Server) -> str:
    """The server's instance: a reply streaming there is left streaming."""
    (row,) = server.db.query("SELECT id FROM instance")
    return row["id"]


def today() -> date:
    return datetime.now(UTC).date()


# --- what each reply stores ----------------------------------------------------------


def test_an_aborted_reply_stores_an_estimate_marked_so(alice: User, fake_llm: FakeOpenAI) -> None:
    """The server sends usage with its last chunk: an aborted reply never gets it. Its
    prompt is estimated from the request sent, its completion from the text streamed."""
    marker = mark()
    with Socket(alice) as socket:
        started = socket.start(f"{marker} {directive(tokens=400, rate=40)}")
        socket.until(lambda f: f["type"] == "token" and f["seq"] >= 2)
        socket.send(action="abort", task_id=started["task_id"])
        aborted = socket.until_end(started["task_id"])[-1]
    assert aborted["type"] == "aborted", aborted
    reply = aborted["message"]
    assert reply["content"]
    assert reply["usage"] == fake_llm.find(marker).estimated_usage(reply["content"])
    assert reply["usage"]["estimated"] is True
    with alice.client() as client:
        stored = client.get(f"/api/chats/{started['chat_id']}").json()["messages"][-1]
    assert stored["usage"] == reply["usage"]


def test_a_server_without_usage_gets_an_estimate_summed_over_tool_rounds(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    """A server that never sends usage (it ignores `stream_options`): each round is
    estimated, the tool-call round and the text round after it, and the reply is their sum."""
    marker = mark()
    arguments = {"parent_id": "root", "value": f"node {marker}"}
    call = {"name": "tree_add_node", "arguments": arguments}
    script = directive(rounds=[[call]], tokens=3, usage=False)
    reply = send(alice, new_chat(alice), f"{marker} {script}")
    assert reply["status"] == "complete"
    first, second = fake_llm.records_for(marker)
    asked = first.estimated_usage("tree_add_node" + json.dumps(arguments))
    answered = second.estimated_usage("t0 t1 t2 ")
    assert reply["usage"] == {
        "prompt_tokens": asked["prompt_tokens"] + answered["prompt_tokens"],
        "completion_tokens": asked["completion_tokens"] + answered["completion_tokens"],
        "estimated": True,
    }


def test_the_servers_figures_are_summed_over_tool_rounds_unmarked(
    alice: User, fake_llm: FakeOpenAI
) -> None:
    marker = mark()
    call = {"name": "tree_add_node", "arguments": {"parent_id": "root", "value": marker}}
    reply = send(alice, new_chat(alice), f"{marker} {directive(rounds=[[call]], tokens=3)}")
    first, second = fake_llm.records_for(marker)
    # The fake's figures: the characters of each request's contents (as it writes them).
    sent = [sum(len(str(m.get("content", ""))) for m in r.messages) for r in (first, second)]
    assert reply["usage"] == {
        "prompt_tokens": sum(sent),
        "completion_tokens": 0 + 3,  # the calls of the first round count no text token
        "estimated": False,
    }


def test_a_reply_whose_server_died_gets_its_completion_estimated(server: Server) -> None:
    """A reply left `streaming` by an instance that is gone is marked `interrupted`; its
    completion is estimated from the text its checkpoints saved, its prompt unknown."""
    user = register_and_login(server)
    chat = new_chat(user)
    reply = insert_reply(
        server, chat, datetime.now(UTC), prompt=None, completion=None, estimated=None,
        status="streaming", instance="gone-instance",
    )  # fmt: skip

    def stored() -> dict[str, Any] | None:
        with user.client() as client:
            messages = client.get(f"/api/chats/{chat}").json()["messages"]
        found = next(m for m in messages if m["id"] == reply)
        return found if found["status"] == "interrupted" else None

    interrupted = wait_until(stored, timeout=60, what="the orphaned reply interrupted")
    assert interrupted["usage"] == {
        "prompt_tokens": None,
        "completion_tokens": math.ceil(len("stored before") / 4),
        "estimated": True,
    }
    assert report(user)["totals"]["completion_tokens"] == 4


# --- GET /api/usage -------------------------------------------------------------------


def test_totals_equal_the_sums_of_the_stored_replies(server: Server, fake_llm: FakeOpenAI) -> None:
    """By day, chat and model, and in all; replies still streaming and user messages are not
    counted; days are UTC days, `from` and `to` both included."""
    user = register_and_login(server)
    first = new_chat(user, title="first")
    second = new_chat(user, title="second", model=OTHER_MODEL)
    send(user, first, f"{mark()} {directive(tokens=3)}")
    send(user, first, f"{mark()} {directive(tokens=5, usage=False)}")  # estimated
    send(user, second, f"{mark()} {directive(tokens=4)}")
    now = datetime.now(UTC)
    insert_reply(server, first, now - timedelta(days=3), prompt=100, completion=7, estimated=False)
    insert_reply(
        server,
        second,
        now - timedelta(days=10),
        prompt=None,  # a reply from before usage was tracked: its prompt unknown
        completion=9,
        estimated=True,
        model=OTHER_MODEL,
    )
    insert_reply(  # still streaming (on the live server): not counted yet
        server,
        first,
        now,
        prompt=None,
        completion=None,
        estimated=None,
        status="streaming",
        instance=live_instance(server),
    )
    insert_reply(  # out of every range asked below
        server, first, now - timedelta(days=40), prompt=1000, completion=1000, estimated=False
    )
    replies = [
        r for r in stored_replies(user) if r["created_at"][:10] >= str(today() - timedelta(days=10))
    ]
    assert len(replies) == 6

    for group_by in ("day", "chat", "model"):
        got = report(user, group_by=group_by, **{"from": str(today() - timedelta(days=10))})
        assert (got["user_id"], got["group_by"], got["truncated"]) == (user.id, group_by, False)
        assert (got["from"], got["to"]) == (str(today() - timedelta(days=10)), str(today()))
        expected = expected_groups(replies, group_by)
        groups = {g["key"]: {k: g[k] for k in SUMS} for g in got["groups"]}
        assert groups == expected, group_by
        totals = {k: sum(g[k] for g in expected.values()) for k in SUMS}
        assert {k: got["totals"][k] for k in SUMS} == totals
        assert got["totals"]["replies"] == 5
        assert got["totals"]["estimated_replies"] == 2
        assert got["totals"]["estimated_share"] == 0.4
        if group_by == "day":
            assert [g["key"] for g in got["groups"]] == sorted(expected)  # oldest first
        else:
            sizes = [g["total_tokens"] for g in got["groups"]]
            assert sizes == sorted(sizes, reverse=True)
        if group_by == "chat":
            assert {g["key"]: g["title"] for g in got["groups"]} == {
                first: "first",
                second: "second",
            }
        if group_by == "model":
            assert set(groups) == {"fake-model", OTHER_MODEL}

    one_day = str(today() - timedelta(days=3))
    only = report(user, **{"from": one_day, "to": one_day})
    assert [(g["key"], g["prompt_tokens"], g["completion_tokens"]) for g in only["groups"]] == [
        (one_day, 100, 7)
    ]
    assert only["totals"]["total_tokens"] == 107
    limited = report(user, group_by="chat", limit=1, **{"from": str(today() - timedelta(days=10))})
    assert len(limited["groups"]) == 1
    assert limited["truncated"] is True
    assert limited["totals"]["replies"] == 5  # the totals still count every group


def test_the_default_range_is_the_last_30_days(server: Server) -> None:
    user = register_and_login(server)
    before = today()
    got = report(user)
    assert got["to"] in (str(before), str(today()))  # unless midnight passed meanwhile
    end = date.fromisoformat(got["to"])
    assert got["from"] == str(end - timedelta(days=29))
    assert got["group_by"] == "day"
    assert got["groups"] == []
    assert got["totals"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "replies": 0,
        "estimated_replies": 0,
        "estimated_share": 0.0,
    }


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": "2026-12-07", "to": "2026-12-06"}, "after"),
        ({"from": "2025-01-01", "to": "2026-12-06"}, "366 days"),
        ({"from": "2026-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"group_by": "week"}, "group_by"),
        ({"limit": "0"}, "limit"),
        ({"user_id": "0"}, "user_id"),
    ],
)
def test_bad_parameters_are_a_clear_400(alice: User, params: dict[str, str], named: str) -> None:
    response = usage(alice, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_message"
    assert named in body["detail"], body


def test_another_users_usage_is_never_included_nor_readable(
    server: Server, fake_llm: FakeOpenAI
) -> None:
    mine, theirs = register_and_login(server), register_and_login(server)
    send(mine, new_chat(mine), f"{mark()} {directive(tokens=2)}")
    send(theirs, new_chat(theirs), f"{mark()} {directive(tokens=7)}")
    send(theirs, new_chat(theirs), f"{mark()} {directive(tokens=1)}")
    assert report(mine)["totals"]["replies"] == 1
    assert report(mine)["totals"]["completion_tokens"] == 2
    assert report(theirs)["totals"]["completion_tokens"] == 8
    assert report(mine, user_id=mine.id) == report(mine)

    refused = usage(mine, user_id=theirs.id)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "forbidden"
    assert usage(mine, user_id=2**31 - 1).status_code == 403  # no hint whether it exists


def test_superusers_read_any_users_usage_staff_do_not(server: Server, fake_llm: FakeOpenAI) -> None:
    user = register_and_login(server)
    send(user, new_chat(user), f"{mark()} {directive(tokens=4)}")
    superuser = login(server, create_account(server.db, "--superuser"))
    staff = login(server, create_account(server.db, "--staff"))

    assert report(superuser, user_id=user.id, group_by="model") == report(user, group_by="model")
    assert report(superuser)["user_id"] == superuser.id  # their own by default
    missing = usage(superuser, user_id=2**31 - 1)
    assert missing.status_code == 404, missing.text
    assert missing.json()["code"] == "not_found"
    assert usage(staff, user_id=user.id).status_code == 403


def login(server: Server, username: str) -> User:
    with server.client() as client:
        response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    with server.client(token) as client:
        me = client.get("/api/me").json()
    return User(me["id"], username, PASSWORD, token, server)


# --- metrics ----------------------------------------------------------------------------


def test_the_token_counters_move_by_model_status_and_kind(
    server: Server, fake_llm: FakeOpenAI
) -> None:
    user = register_and_login(server)
    before = metrics(server)
    complete = send(user, new_chat(user, model=OTHER_MODEL), f"{mark()} {directive(tokens=6)}")
    with Socket(user) as socket:
        started = socket.start(f"{mark()} {directive(tokens=400, rate=40)}")
        socket.until(lambda f: f["type"] == "token")
        socket.send(action="abort", task_id=started["task_id"])
        aborted = socket.until_end(started["task_id"])[-1]["message"]
    after = metrics(server)

    def moved(**labels: str) -> float:
        name = "chatsvc_tokens_total"
        return value(after, name, **labels) - value(before, name, **labels)

    reported = {"model": OTHER_MODEL, "status": "complete", "estimated": "false"}
    assert moved(kind="prompt", **reported) == complete["usage"]["prompt_tokens"]
    assert moved(kind="completion", **reported) == complete["usage"]["completion_tokens"] == 6
    guessed = {"model": "fake-model", "status": "aborted", "estimated": "true"}
    assert aborted["usage"]["estimated"] is True
    assert moved(kind="prompt", **guessed) == aborted["usage"]["prompt_tokens"] > 0
    assert moved(kind="completion", **guessed) == aborted["usage"]["completion_tokens"] > 0
    assert moved(kind="completion", model="fake-model", status="aborted", estimated="false") == 0
    # The upstream's own count of completion tokens moves by the reported figures only.
    old = "chatsvc_completion_tokens_total"
    assert value(after, old) - value(before, old) == 6


# --- the admin ---------------------------------------------------------------------------


def test_superusers_read_each_users_usage_in_the_admin(
    server: Server, engine: str, page: Page, fake_llm: FakeOpenAI
) -> None:
    """The per-user table (all time) in the browser, the per-day view over HTTP: both the
    same sums as the API's; staff are refused both."""
    user = register_and_login(server)
    chat = new_chat(user)
    send(user, chat, f"{mark()} {directive(tokens=3)}")
    # The largest spender of the session: first in the table, which lists the largest first.
    insert_reply(
        server, chat, datetime.now(UTC) - timedelta(days=2), prompt=10**9, completion=5,
        estimated=False,
    )  # fmt: skip
    superuser = create_account(server.db, "--superuser")

    page.goto(f"{server.url}/admin/")
    page.locator("input[name=username]").fill(superuser)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#user")).to_contain_text(superuser)
    page.locator('a[href="#/user_usage/"]').click()
    rows = page.locator(".table_wrapper tbody tr")
    expect(rows.first).to_contain_text(user.username)
    all_time = report(user, **{"from": str(today() - timedelta(days=365))})["totals"]
    assert all_time["prompt_tokens"] > 10**9
    expect(rows.first).to_contain_text(str(all_time["total_tokens"]))
    expect(rows.first).to_contain_text(str(all_time["prompt_tokens"]))
    screenshot(page, f"admin-usage-{engine}")

    with server.client() as client:
        client.get("/admin/")
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        assert (
            client.post(
                "/admin/public/login/", json={"username": superuser, "password": PASSWORD}
            ).status_code
            == 200
        )
        daily = client.get(
            "/admin/api/tables/user_daily_usage/", params={"account": user.id}
        ).json()["rows"]
    by_day = {
        g["key"]: g for g in report(user, **{"from": str(today() - timedelta(days=10))})["groups"]
    }
    assert {row["day"]: (row["prompt_tokens"], row["completion_tokens"], row["replies"])
            for row in daily} == {
        day: (g["prompt_tokens"], g["completion_tokens"], g["replies"]) for day, g in by_day.items()
    }  # fmt: skip

    staff = create_account(server.db, "--staff")
    with server.client() as client:
        client.get("/admin/")
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        assert (
            client.post(
                "/admin/public/login/", json={"username": staff, "password": PASSWORD}
            ).status_code
            == 200
        )
        for view in ("user_usage", "user_daily_usage"):
            assert client.get(f"/admin/api/tables/{view}/").status_code == 403


def test_the_model_label_stays_bounded() -> None:
    """Whatever models replies name, `chatsvc_tokens_total` gets at most MAX_MODEL_LABELS
    model values, then `other` (a label's values are series Prometheus keeps forever)."""
    from prometheus_client.parser import text_string_to_metric_families

    from chatsvc.telemetry import MAX_MODEL_LABELS, Telemetry

    telemetry = Telemetry()
    for number in range(MAX_MODEL_LABELS + 8):
        telemetry.generation_started(user_id=1, chat_id="c", task_id="t")
        telemetry.generation_ended(
            status="complete", user_id=1, chat_id="c", task_id="t", duration=0.1, events=1,
            prompt_tokens=3, completion_tokens=2, finish_reason="stop", error_code=None,
            aborted_by=None, abort_latency=None, model=f"model-{number}", usage_estimated=False,
        )  # fmt: skip
    samples = [
        sample
        for family in text_string_to_metric_families(telemetry.render().decode())
        for sample in family.samples
        if sample.name == "chatsvc_tokens_total"
    ]
    models = {sample.labels["model"] for sample in samples}
    assert len(models) == MAX_MODEL_LABELS + 1
    assert "other" in models
    other = [s.value for s in samples if s.labels["model"] == "other"]
    assert sorted(other) == [8 * 2, 8 * 3]  # completion, prompt of the last eight replies
