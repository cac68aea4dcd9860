"""A socket that reads slowly never slows the reply or its other readers, and is never
buffered for without bound: past ``WS_OUTBOX_EVENTS`` waiting events it is dropped
(close code 1013) and counted in ``chatsvc_slow_consumers_total``."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    AppServer,
    Server,
    Socket,
    register_and_login,
    tokens_of,
    upstream_settings,
    wait_until,
)
from tests.support.http import tls

OUTBOX = 64
#: 2,000 tokens of 2 KB: far more than the kernel's socket buffers hold.
SCRIPT = Script(tokens=2000, pad=2000)


def _slow_socket(server: Server, token: str) -> ClientConnection:
    """A client that stops reading: a tiny receive buffer and a one-frame queue."""
    address = urlsplit(server.url)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((address.hostname, address.port))
    return connect(f"{server.ws_url}?token={token}", sock=raw, max_queue=1, max_size=None)


def _slow_consumers(server: Server) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=10, verify=tls()).text
    found = re.search(r"^chatsvc_slow_consumers_total (\S+)$", metrics, re.MULTILINE)
    assert found, metrics
    return float(found.group(1))


def _drain(connection: ClientConnection) -> None:
    while True:
        connection.recv(timeout=10)


@pytest.fixture
def tight_server(serve_app: Callable[..., AppServer], fake_llm: FakeOpenAI) -> Server:
    # The count bound under test; the byte bound (a 4 MB reply) well above it.
    return serve_app(
        **upstream_settings(fake_llm), WS_OUTBOX_EVENTS=str(OUTBOX), WS_OUTBOX_BYTES="64000000"
    )


def test_a_slow_reader_is_dropped_and_the_fast_one_gets_everything(tight_server: Server) -> None:
    user = register_and_login(tight_server)
    with user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "busy"}).json()["id"]
    before = _slow_consumers(tight_server)
    with _slow_socket(tight_server, user.token) as slow:
        assert json.loads(slow.recv(timeout=10))["type"] == "ready"
        slow.send(json.dumps({"action": "subscribe", "chat_id": chat_id}))
        slow.send(json.dumps({"action": "ping"}))
        assert json.loads(slow.recv(timeout=10)) == {"type": "pong"}
        # From here on the slow client reads nothing.
        with Socket(replace(user, server=tight_server)) as fast:
            started = fast.start(f"flood {directive(tokens=2000, pad=2000)}", chat_id=chat_id)
            frames = fast.until_end(started["task_id"], timeout=60)
        wait_until(
            lambda: _slow_consumers(tight_server) >= before + 1,
            timeout=30,
            what="the slow socket to be dropped",
        )
        # What was already on its way drains, then the connection ends.
        with pytest.raises(ConnectionClosed):
            _drain(slow)
    assert frames[-1]["type"] == "done"
    tokens = tokens_of(frames, started["task_id"])  # deltas read together arrive as one
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert "".join(t["token"] for t in tokens) == SCRIPT.expected_text()
    assert frames[-1]["message"]["content"] == SCRIPT.expected_text()
    assert _slow_consumers(tight_server) == before + 1


def test_a_slow_reader_is_dropped_at_the_byte_bound(spawn_server: Callable[..., Server]) -> None:
    """Few but large events (tree updates of ~100 KB) fill no count bound: the outbox's
    bytes are bounded too (`WS_OUTBOX_BYTES`), and the server does not grow with them."""
    # A process of its own: its resident memory is measured.
    server = spawn_server(WS_OUTBOX_BYTES="300000")
    user = register_and_login(server)
    with user.client() as client:
        chat_id = client.post("/api/chats", json={"title": "big trees"}).json()["id"]
        nodes = [
            {
                "op": "add",
                "path": "/root/children/-",
                "value": {"id": f"n{i}", "value": "", "children": []},
            }
            for i in range(100)
        ]
        assert (
            client.patch(
                f"/api/chats/{chat_id}/tree", json={"version": 0, "ops": nodes}
            ).status_code
            == 200
        )
        before, rss_before = _slow_consumers(server), server.rss()
        with _slow_socket(server, user.token) as slow:
            assert json.loads(slow.recv(timeout=10))["type"] == "ready"
            slow.send(json.dumps({"action": "subscribe", "chat_id": chat_id}))
            slow.send(json.dumps({"action": "ping"}))
            assert json.loads(slow.recv(timeout=10)) == {"type": "pong"}
            # From here on the slow client reads nothing: updates of ~100 KB each until it is
            # dropped. The kernel's buffers take megabytes first, as many as its TCP settings
            # allow (about 10 MB on loopback under Linux 6.18, under 6 MB on earlier CI
            # machines), so the bound is generous: 50 MB.
            for version in range(1, 501):
                text = f"{version:04d}" * 250
                ops = [
                    {"op": "replace", "path": f"/root/children/{i}/value", "value": text}
                    for i in range(100)
                ]
                body = {"version": version, "ops": ops}
                response = client.patch(f"/api/chats/{chat_id}/tree", json=body)
                assert response.status_code == 200, response.text
                if _slow_consumers(server) > before:
                    break
            assert _slow_consumers(server) == before + 1, "the slow socket was never dropped"
            with pytest.raises(ConnectionClosed):
                _drain(slow)
        assert server.rss() - rss_before < 50_000_000
