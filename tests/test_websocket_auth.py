"""``/ws`` authentication by header or ``?token=``, and tokens kept out of the logs."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support import User


def test_query_token_opens_the_socket_and_is_never_logged(alice: User) -> None:
    server = alice.server
    with connect(f"{server.ws_url}?token={alice.token}") as socket:
        ready = json.loads(socket.recv(timeout=10))
        socket.send(json.dumps({"action": "ping"}))
        pong = json.loads(socket.recv(timeout=10))
    assert ready["type"] == "ready"
    assert ready["user_id"] == alice.id
    assert ready["protocol"] == 1
    assert ready["limits"] == {
        "max_message_chars": 16000,
        "max_frame_bytes": 65536,
        "max_concurrent_generations": 3,
    }
    assert pong == {"type": "pong"}
    # The same token in an HTTP query string, and a bad one on the socket.
    with server.client() as client:
        client.get("/api/chats", params={"token": alice.token})
    with pytest.raises(InvalidStatus):
        connect(f"{server.ws_url}?token={alice.token[:-4]}abcd").close()
    log = server.log()
    assert "/ws?token=[redacted]" in log
    assert alice.token not in log
    assert alice.token.split(".")[2] not in log  # not even the signature part


def test_header_token_opens_the_socket(alice: User) -> None:
    headers = {"Authorization": f"Bearer {alice.token}"}
    with connect(alice.server.ws_url, additional_headers=headers) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "ready"


@pytest.mark.parametrize("query", ["", "?token=", "?token=garbage", "?token=a.b.c"])
def test_bad_or_missing_token_refuses_the_handshake(alice: User, query: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{alice.server.ws_url}{query}").close()
    assert refused.value.response.status_code in (401, 403)


def test_malformed_frames_get_invalid_message_and_the_socket_stays(alice: User) -> None:
    with connect(f"{alice.server.ws_url}?token={alice.token}") as socket:
        socket.recv(timeout=10)
        for frame in ["not json", "[]", '{"action": "dance"}', '{"no_action": 1}', b"\x00\x01"]:
            socket.send(frame)
            error = json.loads(socket.recv(timeout=10))
            assert error["type"] == "error"
            assert error["code"] == "invalid_message"
            assert error["message"]
        socket.send(json.dumps({"action": "ping"}))
        assert json.loads(socket.recv(timeout=10)) == {"type": "pong"}


@pytest.mark.parametrize(
    "query",
    ["?%74oken={token}", "?token%3D{token}", "?%74%6F%6B%65%6E={token}", "?x=1&%2574oken={token}"],
)
def test_other_spellings_of_the_token_parameter_are_refused_and_redacted(
    alice: User, query: str
) -> None:
    server = alice.server
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url + query.format(token=alice.token)).close()
    assert refused.value.response.status_code in (401, 403)
    log = server.log()
    assert alice.token not in log
    assert alice.token.split(".")[2] not in log


def test_a_header_with_another_scheme_refuses_the_handshake(alice: User) -> None:
    for scheme in ("Basic", "Token"):
        headers = {"Authorization": f"{scheme} {alice.token}"}
        with pytest.raises(InvalidStatus) as refused:
            connect(alice.server.ws_url, additional_headers=headers).close()
        assert refused.value.response.status_code in (401, 403)
