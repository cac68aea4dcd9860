"""Several instances behind a load balancer: fan-out, abort and snapshots across them.

Each test runs against a *cluster*: two real chatsvc processes (A and B, on
their own loopback ports) sharing one database and an event bus, Redis pub/sub
or PostgreSQL LISTEN/NOTIFY; and, with the in-memory bus, one instance playing
both parts. Every combination runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    PG_ADMIN_URL,
    Database,
    Server,
    Socket,
    User,
    register_and_login,
    start_server,
    tokens_of,
    upstream_settings,
    wait_until,
)
from tests.support.http import tls

REDIS_URL = "redis://127.0.0.1:6379/0"
BUS_URLS = {"memory": None, "redis": REDIS_URL, "postgres": PG_ADMIN_URL}
LEASE_SECONDS = 2


@dataclass
class Cluster:
    bus: str
    db: Database
    a: Server
    b: Server
    settings: dict[str, str]
    cwd: Path

    def start(self) -> Server:
        """One more instance of the cluster (stopped by the test that starts it)."""
        return start_server(self.db, self.cwd, **self.settings)


@pytest.fixture(scope="module", params=list(BUS_URLS))
def cluster(
    request: pytest.FixtureRequest,
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[Cluster]:
    bus = request.param
    if bus == "redis":
        _require_redis()
    db = make_database(engine, migrated=True)
    cwd = tmp_path_factory.mktemp(f"cluster-{engine}-{bus}")
    settings = {**upstream_settings(fake_llm), "INSTANCE_LEASE_SECONDS": str(LEASE_SECONDS)}
    if BUS_URLS[bus] is not None:
        settings["EVENT_BUS_URL"] = BUS_URLS[bus]
    a = start_server(db, cwd, **settings)
    b = a if bus == "memory" else start_server(db, cwd, **settings)
    yield Cluster(bus, db, a, b, settings, cwd)
    for server in {id(a): a, id(b): b}.values():
        server.stop()


def _require_redis() -> None:
    """Redis down is a failure (with the reason), never a skip: CI starts it."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=5) as connection:
            connection.sendall(b"PING\r\n")
            answer = connection.recv(64)
    except OSError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is unreachable ({exc}); .ci/run starts it")
    assert answer.startswith(b"+PONG"), answer


@dataclass
class Twins:
    """One user, logged in once, talking to instance A and to instance B."""

    on_a: User
    on_b: User


@pytest.fixture
def user(cluster: Cluster) -> Twins:
    on_a = register_and_login(cluster.a)
    return Twins(on_a, replace(on_a, server=cluster.b))


def _mark() -> str:
    return f"scale-{secrets.token_hex(4)}"


def _new_chat(user: User) -> str:
    with user.client() as client:
        response = client.post("/api/chats", json={"title": "shared"})
        assert response.status_code == 201, response.text
        return response.json()["id"]


def _follow(socket: Socket, chat_id: str) -> None:
    """Subscribe, and know the server has handled it (frames are handled in order).

    The `chat_created` of `_new_chat` goes to every socket of the user on every instance
    (docs/protocol.md section 4.2); published on A before this socket opened on B, it may
    still reach B's socket after it opened, before or after the `pong`: it is dropped
    here, and `_chat_frames` drops a later one.
    """
    socket.send(action="subscribe", chat_id=chat_id)
    socket.send(action="ping")
    frame = socket.recv()
    while frame["type"] == "chat_created":
        assert frame["chat"]["id"] == chat_id, frame
        frame = socket.recv()
    assert frame == {"type": "pong"}


def _chat_frames(frames: list[dict]) -> list[dict]:
    """The frames of a chat's messages and replies, without a late `chat_created`."""
    return [f for f in frames if f["type"] != "chat_created"]


def _text(frames: list[dict], task_id: str) -> str:
    return "".join(t["token"] for t in tokens_of(frames, task_id))


def _stored_replies(db: Database, chat_id: str) -> list[dict]:
    rows = db.query(
        "SELECT id, role, status, content FROM message WHERE chat = ? ORDER BY created_at",
        uuid.UUID(chat_id),
    )
    ids = [str(row["id"]) for row in rows]
    assert len(ids) == len(set(ids)), "a message was stored twice"
    return rows


def _wait_status(db: Database, chat_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        replies = [r for r in _stored_replies(db, chat_id) if r["role"] == "assistant"]
        if replies and replies[-1]["status"] == status:
            return replies[-1]
        assert time.monotonic() < deadline, replies
        time.sleep(0.1)


def test_a_stream_started_on_a_reaches_a_socket_of_the_user_on_b(
    cluster: Cluster, user: Twins
) -> None:
    chat_id = _new_chat(user.on_a)
    with Socket(user.on_a) as writer, Socket(user.on_b) as reader:
        _follow(reader, chat_id)
        started = writer.start(f"fan-out {directive(tokens=40, rate=200)}", chat_id=chat_id)
        read = _chat_frames(reader.until_end(started["task_id"]))
        written = writer.until_end(started["task_id"])
    kinds = [f["type"] for f in read]
    assert kinds[:2] == ["message", "started"]
    assert read[1] == started
    assert tokens_of(read, started["task_id"]) == tokens_of(written, started["task_id"])
    # One gapless sequence; tokens that reach the server in one read are relayed as one.
    seqs = [t["seq"] for t in tokens_of(read, started["task_id"])]
    assert seqs == list(range(len(seqs)))
    assert "".join(t["token"] for t in tokens_of(read, started["task_id"])) == "".join(
        f"t{n} " for n in range(40)
    )
    assert read[-1] == written[-1]
    assert read[-1]["type"] == "done"
    assert read[-1]["message"]["content"] == Script(tokens=40).expected_text()
    assert [r["role"] for r in _stored_replies(cluster.db, chat_id)] == ["user", "assistant"]


def test_rest_abort_sent_to_b_cancels_the_generation_running_on_a(
    cluster: Cluster, user: Twins, fake_llm: FakeOpenAI
) -> None:
    chat_id = _new_chat(user.on_a)
    mark = _mark()
    with Socket(user.on_a) as writer, Socket(user.on_b) as reader:
        _follow(reader, chat_id)
        started = writer.start(f"{mark} {directive(tokens=400, rate=40)}", chat_id=chat_id)
        written = writer.until(lambda f: f["type"] == "token" and f["seq"] >= 3)
        with user.on_b.client() as client:
            response = client.post(f"/api/chats/{chat_id}/abort")
        written += writer.until_end(started["task_id"])
        read = reader.until_end(started["task_id"])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["task_id"] == started["task_id"]
    assert written[-1]["type"] == "aborted"
    assert read[-1] == written[-1]  # both sockets, on both instances, got the same `aborted`
    assert answer["message"] == written[-1]["message"]
    assert answer["message"]["status"] == "aborted"
    assert answer["message"]["content"] == _text(written, started["task_id"])
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, what="the upstream stream to be closed")
    assert record.tokens_sent < 400
    replies = _stored_replies(cluster.db, chat_id)
    assert [(r["role"], r["status"]) for r in replies] == [
        ("user", "complete"),
        ("assistant", "aborted"),
    ]
    assert replies[1]["content"] == answer["message"]["content"]


def test_a_socket_on_b_aborts_a_task_of_a_by_its_id(
    cluster: Cluster, user: Twins, fake_llm: FakeOpenAI
) -> None:
    mark = _mark()
    with Socket(user.on_a) as writer, Socket(user.on_b) as other:
        started = writer.start(f"{mark} {directive(tokens=400, rate=40)}")
        writer.until(lambda f: f["type"] == "token")
        other.send(action="abort", task_id=started["task_id"])
        told = other.until(lambda f: f["type"] in ("aborted", "error"))[-1]
        written = writer.until_end(started["task_id"])
        other.send(action="abort", task_id=started["task_id"])  # it has ended: not running
        late = other.recv()
    assert told["type"] == "aborted", told
    assert told == written[-1]
    assert late["type"] == "error"
    assert late["code"] == "not_running"
    record = fake_llm.find(mark)
    fake_llm.wait_for(lambda: record.disconnected, what="the upstream stream to be closed")


def test_subscribe_on_b_mid_stream_gives_a_snapshot_and_the_rest(
    cluster: Cluster, user: Twins
) -> None:
    # Tokens of 200 characters: the snapshot and the final message are larger than
    # PostgreSQL's 8,000-byte NOTIFY payload, so they cross that bus in chunks.
    script = Script(tokens=90, pad=200)
    with Socket(user.on_a) as writer:
        started = writer.start(f"late {directive(tokens=90, rate=60, pad=200)}")
        writer.until(lambda f: f["type"] == "token" and f["seq"] >= 45)
        with Socket(user.on_b) as late:
            late.send(action="subscribe", chat_id=started["chat_id"])
            snapshot = late.recv()
            rest = late.until_end(started["task_id"])
        written = writer.until_end(started["task_id"])
    assert snapshot["type"] == "snapshot", snapshot
    assert snapshot["task_id"] == started["task_id"]
    assert snapshot["message_id"] == started["message_id"]
    assert snapshot["seq"] >= 45
    following = [t["seq"] for t in tokens_of(rest, started["task_id"])]
    last = tokens_of(written, started["task_id"])[-1]["seq"]
    assert following == list(range(snapshot["seq"] + 1, last + 1))  # no gap, no duplicate
    assert snapshot["content"] + _text(rest, started["task_id"]) == script.expected_text()
    assert rest[-1] == written[-1]
    assert rest[-1]["message"]["content"] == script.expected_text()


def test_one_reply_at_a_time_per_chat_across_instances(cluster: Cluster, user: Twins) -> None:
    with Socket(user.on_a) as first, Socket(user.on_b) as second:
        started = first.start(f"busy {directive(tokens=400, rate=40)}")
        second.send(action="send_message", content="me too", chat_id=started["chat_id"])
        refused = second.until(lambda f: f["type"] == "error")[-1]
        first.send(action="abort", task_id=started["task_id"])
        first.until_end(started["task_id"])
    assert refused["code"] == "busy"
    assert [r["role"] for r in _stored_replies(cluster.db, started["chat_id"])] == [
        "user",
        "assistant",
    ]


def test_killing_an_instance_interrupts_its_replies_and_only_its_own(
    cluster: Cluster, user: Twins
) -> None:
    doomed = cluster.start()
    on_doomed = replace(user.on_a, server=doomed)
    try:
        with Socket(on_doomed) as victim, Socket(user.on_b) as survivor:
            lost = victim.start(f"lost {directive(tokens=2000, rate=20)}")
            kept = survivor.start(f"kept {directive(tokens=2000, rate=20)}")
            victim.until(lambda f: f["type"] == "token" and f["seq"] >= 5)
            survivor.send(action="subscribe", chat_id=lost["chat_id"])
            wait_until(  # a checkpoint of the doomed reply is stored
                lambda: cluster.db.query(
                    "SELECT content FROM message WHERE id = ?", lost["message_id"]
                )[0]["content"].startswith("t0 t1 t2 t3 t4 "),
                what="a checkpoint of the doomed reply",
            )
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait()
            ended = survivor.until(
                lambda f: f.get("task_id") == lost["task_id"] and f["type"] == "error",
                timeout=LEASE_SECONDS * 10,
            )[-1]
            interrupted = _wait_status(cluster.db, lost["chat_id"], "interrupted")
            survivor_reply = _stored_replies(cluster.db, kept["chat_id"])[-1]
            survivor.send(action="abort", task_id=kept["task_id"])
            survivor.until_end(kept["task_id"])
    finally:
        doomed.stop()
    assert ended["code"] == "internal"
    assert ended["chat_id"] == lost["chat_id"]
    assert interrupted["content"].startswith("t0 t1 t2 t3 t4 ")  # the last checkpoint
    assert survivor_reply["status"] == "streaming"  # recovery left the live instance's alone
    assert _wait_status(cluster.db, kept["chat_id"], "aborted")
    assert len(_stored_replies(cluster.db, lost["chat_id"])) == 2


def test_a_tree_patch_on_b_reaches_a_socket_following_the_chat_on_a(
    cluster: Cluster, user: Twins
) -> None:
    chat_id = _new_chat(user.on_a)
    ops = [
        {
            "op": "add",
            "path": "/root/children/-",
            "value": {"id": "a", "value": "from B", "children": []},
        }
    ]
    with Socket(user.on_a) as reader:
        _follow(reader, chat_id)
        with user.on_b.client() as client:
            response = client.patch(f"/api/chats/{chat_id}/tree", json={"version": 0, "ops": ops})
        update = reader.recv()
    assert response.status_code == 200, response.text
    assert update == {
        "type": "tree_update",
        "chat_id": chat_id,
        "version": 1,
        # The change as applied, normalised (docs/protocol.md 5.3): `-` became its index.
        "ops": [{**ops[0], "path": "/root/children/0"}],
        "source": "user",
        "task_id": None,
    }
    with user.on_a.client() as client:
        assert client.get(f"/api/chats/{chat_id}/tree").json() == response.json()


def test_readiness_reports_the_event_bus(cluster: Cluster) -> None:
    for server in (cluster.a, cluster.b):
        ready = httpx.get(f"{server.url}/health/ready", timeout=10, verify=tls())
        assert ready.status_code == 200
        expected = "none" if cluster.bus == "memory" else "ok"
        assert ready.json()["event_bus"] == expected
        shown = BUS_URLS[cluster.bus] or "in-process (one instance"
        assert f"Event bus  {shown}" in server.log()  # the start banner says which


@pytest.fixture(scope="module", params=["redis", "postgres"])
def titled_pair(
    request: pytest.FixtureRequest,
    engine: str,
    make_database: Callable[[str], Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> Iterator[tuple[Server, Server]]:
    """Two instances on a shared bus that name chats (`AUTO_TITLES=true`)."""
    bus = request.param
    if bus == "redis":
        _require_redis()
    db = make_database(engine)
    cwd = tmp_path_factory.mktemp(f"titled-{engine}-{bus}")
    settings = {**upstream_settings(fake_llm), "AUTO_TITLES": "true"}
    settings["EVENT_BUS_URL"] = str(BUS_URLS[bus])
    a = start_server(db, cwd, **settings)
    b = start_server(db, cwd, **settings)
    yield a, b
    b.stop()
    a.stop()


def _until_pong(socket: Socket) -> list[dict]:
    """What the socket was given before a `ping` sent now."""
    socket.send(action="ping")
    return socket.until(lambda f: f["type"] == "pong")[:-1]


def test_the_model_s_title_reaches_the_user_s_sockets_on_the_other_instance(
    titled_pair: tuple[Server, Server],
) -> None:
    """A chat named on A: on B, a socket that follows no chat and one that follows the chat
    each get `chat_updated` once; another user's socket on B gets nothing."""
    a, b = titled_pair
    on_a = register_and_login(a)
    on_b = replace(on_a, server=b)
    stranger = register_and_login(b)
    with (
        Socket(on_b) as idle,
        Socket(on_b) as follower,
        Socket(stranger) as other,
        Socket(on_a) as writer,
    ):
        with on_a.client() as client:  # untitled: the model names it after its first reply
            response = client.post("/api/chats", json={})
        assert response.status_code == 201, response.text
        chat_id = response.json()["id"]
        for socket in (idle, follower):  # the list of every tab gets the new chat
            created = socket.until(lambda f: f["type"] == "chat_created")
            assert [f["chat"]["id"] for f in created] == [chat_id], created
        _follow(follower, chat_id)
        script = directive(tokens=2, unstreamed_text="Named on A")
        started = writer.start(f"{_mark()} {script}", chat_id=chat_id)
        writer.until_end(started["task_id"])
        title = writer.until(lambda f: f["type"] == "chat_updated")[-1]
        assert title["chat"]["title"] == "Named on A"
        followed = follower.until(lambda f: f["type"] == "chat_updated")
        assert followed[-1] == title
        assert [f["type"] for f in followed][-1:] == ["chat_updated"]
        told = idle.until(lambda f: f["type"] == "chat_updated")
        assert told == [title], told  # none of the reply's events: it follows no chat
        # B handed each copy over at once: a pong now comes behind any second one.
        assert _until_pong(follower) == []
        assert _until_pong(idle) == []
        assert _until_pong(other) == []
    with on_b.client() as client:
        assert client.get(f"/api/chats/{chat_id}").json()["title"] == "Named on A"


@pytest.mark.parametrize("bus", ["redis", "postgres"])
def test_deployments_sharing_a_bus_hear_nothing_of_each_other(
    bus: str,
    engine: str,
    make_database: Callable[..., Database],
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeOpenAI,
) -> None:
    """Two deployments, each on its own database, on one Redis (or one bus database):
    their first users have the same id. A chat created in the first reaches its user's
    socket on the first's other instance, and never the second's user. A third
    deployment on the first's database but with a JWT secret of its own (a copy of
    production's database, which keeps its identity) is apart as well."""
    if bus == "redis":
        _require_redis()
    settings = {**upstream_settings(fake_llm), "EVENT_BUS_URL": str(BUS_URLS[bus])}
    cwd = tmp_path_factory.mktemp(f"deployments-{engine}-{bus}")
    first, second = make_database(engine, migrated=True), make_database(engine, migrated=True)
    servers = [start_server(first, cwd, **settings) for _ in range(2)]
    servers.append(start_server(second, cwd, **settings))
    servers.append(start_server(first, cwd, **settings, JWT_SECRET="another-" + "y" * 40))
    a, a_too, b, _ = servers
    try:
        on_a, theirs = register_and_login(a), register_and_login(b)
        assert on_a.id == theirs.id, "both deployments' first users share an id"
        with Socket(replace(on_a, server=a_too)) as mine, Socket(theirs) as stranger:
            chat_id = _new_chat(on_a)
            created = mine.until(lambda f: f["type"] == "chat_created")
            assert [f["chat"]["id"] for f in created] == [chat_id], created
            assert _until_pong(stranger) == []
        namespaces = [re.findall(r"namespace (chatsvc\.\w+)", s.log()) for s in servers]
        assert namespaces[0] == namespaces[1], namespaces
        assert len({*map(tuple, namespaces[1:])}) == 3, namespaces
        assert len(namespaces[0]) == 1, namespaces
    finally:
        for server in servers:
            server.stop()
