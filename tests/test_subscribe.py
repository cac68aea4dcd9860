"""`subscribe` and `snapshot`: a second tab, and a reconnect, follow a reply without gaps."""

from __future__ import annotations

from tests.fake_openai import Script, directive
from tests.support import Socket, User, tokens_of


def _continuation(frames: list[dict], task_id: str) -> str:
    return "".join(t["token"] for t in tokens_of(frames, task_id))


def test_a_second_tab_gets_a_snapshot_then_the_rest(alice: User) -> None:
    with Socket(alice) as first, Socket(alice) as second:
        started = first.start(f"tabs {directive(tokens=80, rate=80)}")
        first.until(lambda f: f["type"] == "token" and f["seq"] >= 5)
        heard = second.until(lambda f: f["type"] == "chat_created")  # every tab lists it
        assert [f["type"] for f in heard] == ["chat_created"], heard
        second.send(action="subscribe", chat_id=started["chat_id"])
        snapshot = second.recv()
        rest = second.until_end(started["task_id"])
        mine = first.until_end(started["task_id"])
    assert snapshot["type"] == "snapshot"
    assert snapshot["task_id"] == started["task_id"]
    assert snapshot["message_id"] == started["message_id"]
    assert snapshot["seq"] >= 5
    following = tokens_of(rest, started["task_id"])
    assert following[0]["seq"] == snapshot["seq"] + 1  # no gap, no duplicate
    assert [t["seq"] for t in following] == list(
        range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(following))
    )
    assert rest[-1] == mine[-1]  # the same terminal event for every subscriber
    assert (
        snapshot["content"] + _continuation(rest, started["task_id"])
        == Script(tokens=80).expected_text()
    )
    assert rest[-1]["message"]["content"] == Script(tokens=80).expected_text()


def test_a_reconnecting_client_continues_the_reply(alice: User) -> None:
    first = Socket(alice)
    started = first.start(f"reconnect {directive(tokens=80, rate=80)}")
    seen = first.until(lambda f: f["type"] == "token" and f["seq"] >= 3)
    first.close()  # the network dropped; the reply goes on
    with Socket(alice) as again:
        again.send(action="subscribe", chat_id=started["chat_id"])
        snapshot = again.recv()
        rest = again.until_end(started["task_id"])
    assert snapshot["type"] == "snapshot"
    assert snapshot["content"].startswith(_continuation(seen, started["task_id"]))
    assert (
        snapshot["content"] + _continuation(rest, started["task_id"])
        == (rest[-1]["message"]["content"])
    )
    assert rest[-1]["type"] == "done"


def test_a_follower_sees_the_message_the_stream_and_its_abort(alice: User) -> None:
    with alice.client() as client:
        chat = client.post("/api/chats", json={"title": "watched"}).json()
    with Socket(alice) as watcher, Socket(alice) as writer:
        watcher.send(action="subscribe", chat_id=chat["id"])
        writer.send(action="ping")
        assert writer.recv() == {"type": "pong"}  # the subscribe frame went first
        watcher.send(action="ping")
        assert watcher.recv() == {"type": "pong"}  # nothing running: no snapshot
        started = writer.start(f"seen {directive(tokens=200, rate=50)}", chat_id=chat["id"])
        watched = watcher.until(lambda f: f["type"] == "token")
        writer.send(action="abort", task_id=started["task_id"])
        watched += watcher.until_end(started["task_id"])
        written = writer.until_end(started["task_id"])
        watcher.send(action="unsubscribe", chat_id=chat["id"])
        watcher.send(action="ping")
        assert watcher.recv() == {"type": "pong"}
        again = writer.start("after unsubscribe", chat_id=chat["id"])
        writer.until_end(again["task_id"])
        watcher.send(action="ping")
        assert watcher.recv() == {"type": "pong"}  # no events of the new reply came first
    kinds = [f["type"] for f in watched]
    assert kinds[:2] == ["message", "started"]
    assert watched[0]["message"]["content"].startswith("seen")
    assert watched[-1]["type"] == "aborted"
    assert watched[-1] == written[-1]
