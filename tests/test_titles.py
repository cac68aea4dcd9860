"""Automatic titles (issue 15): after a chat's first reply the model names the chat, in one
short request that is not streamed, off the reply's path; `chat_updated` tells every socket
of the chat's owner. Never a chat its user titled, not when `AUTO_TITLES=false`, and a failing title
request changes nothing but a log line. The echo provider keeps first-words titles."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, Record, directive
from tests.support import (
    Server,
    Socket,
    User,
    register_and_login,
    wait_until,
)

#: The title request's token cap (chatsvc.providers.openai_compatible.TITLE_MAX_TOKENS).
TITLE_MAX_TOKENS = 32


def marker() -> str:
    return f"titles-{secrets.token_hex(4)}"


def title_requests(fake: FakeOpenAI, mark: str) -> list[Record]:
    return [r for r in fake.records if not r.stream and mark in str(r.messages)]


def chat_of(user: User, chat_id: str) -> dict[str, Any]:
    with user.client() as client:
        response = client.get(f"/api/chats/{chat_id}")
    assert response.status_code == 200, response.text
    return response.json()


def exchange(socket: Socket, content: str, **fields: Any) -> list[dict[str, Any]]:
    """Send a message and read up to its reply's end; the frames read."""
    socket.send(action="send_message", content=content, **fields)
    frames = socket.until(lambda f: f["type"] in ("started", "error"))
    assert frames[-1]["type"] == "started", frames
    frames += socket.until_end(frames[-1]["task_id"])
    assert frames[-1]["type"] == "done", frames[-1]
    return frames


def quiet_for(socket: Socket, seconds: float) -> list[dict[str, Any]]:
    """Every frame the socket gets in the next ``seconds``."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(socket.recv(timeout=left))
        except TimeoutError:
            break
    return frames


def test_the_model_names_a_new_chat_once(titled: Server, fake_llm: FakeOpenAI) -> None:
    user = register_and_login(titled)
    mark, later = marker(), marker()
    answer = '  \n"Title: Planning a trip to Lisbon."\nA second line that is dropped'
    with Socket(user) as socket:
        first = f"{mark} plan my trip\nmore words {directive(tokens=3, unstreamed_text=answer)}"
        frames = exchange(socket, first)
        created = next(f for f in frames if f["type"] == "chat_created")["chat"]
        assert created["title"] == f"{mark} plan my trip"  # the placeholder: first line
        updated = socket.until(lambda f: f["type"] == "chat_updated")[-1]
        chat_id = created["id"]
        assert updated["chat"]["id"] == chat_id
        assert updated["chat"]["title"] == "Planning a trip to Lisbon"
        # The second reply of the chat: no title request, no event.
        again = exchange(
            socket, f"{later} {directive(tokens=2, unstreamed_text='Other')}", chat_id=chat_id
        )
        assert "chat_updated" not in [f["type"] for f in again + quiet_for(socket, 1.0)]
    (request,) = title_requests(fake_llm, mark)
    assert request.body["max_tokens"] == TITLE_MAX_TOKENS
    assert [m["role"] for m in request.messages] == ["system", "user"]
    assert "plan my trip" in request.messages[1]["content"]
    assert "t0 t1 t2" in request.messages[1]["content"]  # the reply, too
    assert title_requests(fake_llm, later) == []
    assert chat_of(user, chat_id)["title"] == "Planning a trip to Lisbon"


def test_every_socket_of_the_user_hears_the_title_once(titled: Server) -> None:
    """A tab that follows no chat (it shows the list) gets `chat_updated` with the title; a
    socket that follows the chat gets it once; another user's socket never."""
    user, other = register_and_login(titled), register_and_login(titled)
    mark = marker()
    with Socket(user) as tab, Socket(user) as idle, Socket(other) as stranger:
        frames = exchange(tab, f"{mark} {directive(tokens=2, unstreamed_text='Lisbon trip')}")
        chat_id = frames[-1]["chat_id"]
        told = idle.until(lambda f: f["type"] == "chat_updated")
        assert [f["type"] for f in told] == ["chat_created", "chat_updated"], told
        assert told[-1]["chat"]["id"] == chat_id
        assert told[-1]["chat"]["title"] == "Lisbon trip"
        # Every socket of this instance was given it at once: a pong comes behind any copy.
        mine = tab.until(lambda f: f["type"] == "chat_updated")
        assert mine[-1] == told[-1]
        for socket in (tab, idle, stranger):
            socket.send(action="ping")
            rest = socket.until(lambda f: f["type"] == "pong")
            assert rest == [{"type": "pong"}], rest


def test_a_slow_title_never_delays_done(titled: Server, fake_llm: FakeOpenAI) -> None:
    """Off the reply's path: the title request takes 3 s, `done` does not wait for it."""
    user = register_and_login(titled)
    mark = marker()
    script = directive(tokens=2, unstreamed_text="Slow", unstreamed_delay=3)
    with Socket(user) as socket:
        sent_at = time.monotonic()
        exchange(socket, f"{mark} {script}")
        done_after = time.monotonic() - sent_at
        updated = socket.until(lambda f: f["type"] == "chat_updated")[-1]
        updated_after = time.monotonic() - sent_at
    assert done_after < 2.5, done_after
    assert updated_after >= 3, updated_after
    assert updated["chat"]["title"] == "Slow"


def test_a_chat_its_user_titled_is_never_renamed(titled: Server, fake_llm: FakeOpenAI) -> None:
    user = register_and_login(titled)
    titled_mark, renamed_mark = marker(), marker()
    with user.client() as client:
        mine = client.post("/api/chats", json={"title": "Mine"}).json()
        renamed = client.post("/api/chats", json={}).json()
        assert renamed["title"] == "New chat"
        client.patch(f"/api/chats/{renamed['id']}", json={"title": "Renamed by me"})
    with Socket(user) as socket:
        script = directive(tokens=2, unstreamed_text="Not yours")
        exchange(socket, f"{titled_mark} {script}", chat_id=mine["id"])
        exchange(socket, f"{renamed_mark} {script}", chat_id=renamed["id"])
        assert "chat_updated" not in [f["type"] for f in quiet_for(socket, 1.5)]
    assert title_requests(fake_llm, titled_mark) == []
    assert title_requests(fake_llm, renamed_mark) == []
    assert chat_of(user, mine["id"])["title"] == "Mine"
    assert chat_of(user, renamed["id"])["title"] == "Renamed by me"


def test_a_chat_created_without_a_title_is_named(titled: Server, fake_llm: FakeOpenAI) -> None:
    """`POST /api/chats` with the default title: the model names it after its first reply."""
    user = register_and_login(titled)
    mark = marker()
    with user.client() as client:
        chat = client.post("/api/chats", json={}).json()
    with Socket(user) as socket:
        script = directive(tokens=2, unstreamed_text="Named later")
        exchange(socket, f"{mark} {script}", chat_id=chat["id"])
        updated = socket.until(lambda f: f["type"] == "chat_updated")[-1]
    assert updated["chat"]["title"] == "Named later"
    assert chat_of(user, chat["id"])["title"] == "Named later"


def test_a_failing_title_request_leaves_the_chat_as_it_was(
    titled: Server, fake_llm: FakeOpenAI
) -> None:
    """The fake answers the title request 500: logged only; the chat keeps its first words
    and goes on working."""
    user = register_and_login(titled)
    mark, later = marker(), marker()
    with Socket(user) as socket:
        frames = exchange(socket, f"{mark} {directive(tokens=2, unstreamed_status=500)}")
        chat_id = next(f for f in frames if f["type"] == "chat_created")["chat"]["id"]
        fake_llm.wait_for(lambda: title_requests(fake_llm, mark), what="the title request")
        again = exchange(socket, f"{later} {directive(tokens=2)}", chat_id=chat_id)
        seen = [f["type"] for f in frames + again + quiet_for(socket, 1.0)]
    assert "chat_updated" not in seen
    assert "error" not in seen
    assert len(title_requests(fake_llm, mark)) == 1
    assert title_requests(fake_llm, later) == []  # asked once, never again
    assert chat_of(user, chat_id)["title"] == f"{mark} {directive(tokens=2, unstreamed_status=500)}"
    wait_until(lambda: "could not name it" in titled.log(), what="the failure logged")


def test_no_titles_when_turned_off(alice: User, fake_llm: FakeOpenAI) -> None:
    """The shared test server runs with `AUTO_TITLES=false`."""
    mark = marker()
    with Socket(alice) as socket:
        frames = exchange(socket, f"{mark} first words {directive(tokens=2)}")
        assert "chat_updated" not in [f["type"] for f in quiet_for(socket, 1.0)]
    chat_id = next(f for f in frames if f["type"] == "chat_created")["chat"]["id"]
    assert title_requests(fake_llm, mark) == []
    assert chat_of(alice, chat_id)["title"].startswith(f"{mark} first words")


def test_the_echo_provider_keeps_first_words_titles(
    spawn_server: Callable[..., Server],
) -> None:
    server = spawn_server(AUTO_TITLES="true", ECHO_TOKEN_DELAY="0")
    user = register_and_login(server)
    with Socket(user) as socket:
        frames = exchange(socket, "apples and pears\nand a second line")
        chat = next(f for f in frames if f["type"] == "chat_created")["chat"]
        assert "chat_updated" not in [f["type"] for f in quiet_for(socket, 1.0)]
    assert chat["title"] == "apples and pears"
    assert chat_of(user, chat["id"])["title"] == "apples and pears"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ("Trip to Lisbon", "Trip to Lisbon"),
        ('  \n"Title: Planning a trip."\nmore', "Planning a trip"),
        ("**Café «Lisboa»**", "Café «Lisboa»"),
        ("a\tb\x00c", "a b c"),
        ("x" * 300, "x" * 200),
        ('""', None),
        ("\n \n", None),
    ],
)
def test_the_answer_is_cleaned(answer: str, title: str | None) -> None:
    """One line, no quotes, label or final period, at most 200 characters (`Title`)."""
    from chatsvc.titles import clean

    assert clean(answer) == title


def test_an_answer_with_no_title_in_it_leaves_the_chat_as_it_was(
    titled: Server, fake_llm: FakeOpenAI
) -> None:
    """The model answers the title request with nothing a title can be made of (quotes
    only): the chat keeps its first words, nobody is told of a change, and it is not asked
    again on the next reply."""
    user = register_and_login(titled)
    mark, later = marker(), marker()
    nothing = '  ""  '
    first = f"{mark} first words {directive(tokens=2, unstreamed_text=nothing)}"
    with Socket(user) as socket:
        frames = exchange(socket, first)
        created = next(f for f in frames if f["type"] == "chat_created")["chat"]
        chat_id = created["id"]
        wait_until(
            lambda: f"chat {chat_id}: the model gave no title" in titled.log(),
            what="the naming task's end",
        )
        again = exchange(socket, f"{later} {directive(tokens=2)}", chat_id=chat_id)
        socket.send(action="ping")
        seen = frames + again + socket.until(lambda f: f["type"] == "pong")
    assert "chat_updated" not in [f["type"] for f in seen]
    assert len(title_requests(fake_llm, mark)) == 1
    assert title_requests(fake_llm, later) == []  # the chat's one chance to be named is spent
    assert created["title"].startswith(f"{mark} first words")
    assert chat_of(user, chat_id)["title"] == created["title"]
