"""Only the models the operator offers (``MODELS``) reach the upstream, billed to its key
(issue 12): ``GET /api/models`` lists them, anything else is ``422 invalid_message``, and a
chat kept from before with a model no longer offered is answered by ``MODEL_NAME``."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI
from tests.support import (
    OTHER_MODEL,
    Server,
    Socket,
    User,
    clean_environment,
    register_and_login,
    run_chatsvc,
)
from tests.support.http import tls

NOT_OFFERED = "o1-pro"


def marker() -> str:
    return f"models-{uuid.uuid4().hex[:8]}"


def test_models_lists_what_a_chat_may_choose(server: Server, alice: User) -> None:
    with alice.client() as client:
        listed = client.get("/api/models")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "default": "fake-model",
        "models": [{"id": "fake-model"}, {"id": OTHER_MODEL}],
    }
    assert httpx.get(f"{server.url}/api/models", verify=tls()).status_code == 401


def test_a_model_not_offered_is_refused_with_422(fresh_user: User) -> None:
    with fresh_user.client() as client:
        refused = client.post("/api/chats", json={"title": "pricey", "model": NOT_OFFERED})
        assert client.get("/api/chats").json()["items"] == []  # nothing was created
        chat = client.post("/api/chats", json={"model": OTHER_MODEL}).json()
        changed = client.patch(f"/api/chats/{chat['id']}", json={"model": NOT_OFFERED})
        kept = client.get(f"/api/chats/{chat['id']}").json()
        back = client.patch(f"/api/chats/{chat['id']}", json={"model": "fake-model"})
        default = client.patch(f"/api/chats/{chat['id']}", json={"model": None})
    for answer in (refused, changed):
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["code"] == "invalid_message"
        assert NOT_OFFERED in body["detail"]
        assert "/api/models" in body["detail"]  # says what to do
    assert chat["model"] == OTHER_MODEL
    assert kept["model"] == OTHER_MODEL
    assert back.json()["model"] == "fake-model"
    assert default.json()["model"] is None


def test_the_upstream_never_gets_a_model_not_offered(
    server: Server, alice: User, fake_llm: FakeOpenAI
) -> None:
    """A chat stored before the allow-list (or before MODELS shrank) keeps its `model`, but
    its replies come from MODEL_NAME, over the WebSocket and over REST alike."""
    with alice.client() as client:
        chosen = client.post("/api/chats", json={"model": OTHER_MODEL}).json()
        kept = client.post("/api/chats", json={}).json()
    server.db.query("UPDATE chat SET model = ? WHERE id = ?", NOT_OFFERED, uuid.UUID(kept["id"]))

    over_socket, over_socket_chosen, over_rest = marker(), marker(), marker()
    with Socket(alice) as socket:
        started = socket.start(over_socket, chat_id=kept["id"])
        done = socket.until_end(started["task_id"])[-1]
        started = socket.start(over_socket_chosen, chat_id=chosen["id"])
        done_chosen = socket.until_end(started["task_id"])[-1]
    with alice.client() as client:
        reply = client.post(f"/api/chats/{kept['id']}/messages", json={"content": over_rest})
        chat = client.get(f"/api/chats/{kept['id']}").json()

    assert fake_llm.find(over_socket).model == "fake-model"
    assert fake_llm.find(over_rest).model == "fake-model"
    assert fake_llm.find(over_socket_chosen).model == OTHER_MODEL  # an offered choice holds
    assert done["type"] == "done"
    assert done["message"]["model"] == "fake-model"  # the reply says which model answered
    assert done_chosen["message"]["model"] == OTHER_MODEL
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"]["model"] == "fake-model"
    assert chat["model"] == NOT_OFFERED  # left as stored: the user sees it and may change it
    assert {m["model"] for m in chat["messages"] if m["role"] == "assistant"} == {"fake-model"}


def test_models_is_in_the_openapi_schema(server: Server) -> None:
    schema = httpx.get(f"{server.url}/schema/openapi.json", verify=tls()).json()
    operation = schema["paths"]["/api/models"]["get"]
    assert operation["operationId"] == "listModels"
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ModelList"}
    components = schema["components"]["schemas"]
    assert set(components["ModelList"]["properties"]) == {"default", "models"}
    assert components["ModelList"]["properties"]["models"]["items"] == {
        "$ref": "#/components/schemas/ModelInfo"
    }
    assert set(components["ModelInfo"]["properties"]) == {"id"}
    assert "422" in schema["paths"]["/api/chats"]["post"]["responses"]
    assert "422" in schema["paths"]["/api/chats/{chat_id}"]["patch"]["responses"]


def test_the_echo_provider_works_on_the_defaults(serve_app) -> None:  # type: ignore[no-untyped-def]
    server: Server = serve_app(ECHO_TOKEN_DELAY="0")  # no key, no MODELS, no MODEL_NAME
    user = register_and_login(server)
    with user.client() as client:
        listed = client.get("/api/models").json()
        chat = client.post("/api/chats", json={"model": "gpt-4o-mini"})
        other = client.post("/api/chats", json={"model": "gpt-4o"})
    assert listed == {"default": "gpt-4o-mini", "models": [{"id": "gpt-4o-mini"}]}
    assert chat.status_code == 201, chat.text
    assert other.status_code == 422
    with Socket(user) as socket:
        started = socket.start("hello echo", chat_id=chat.json()["id"])
        done = socket.until_end(started["task_id"])[-1]
    assert done["type"] == "done"
    assert done["message"]["content"]


@pytest.mark.parametrize(
    ("settings", "expects"),
    [
        ({"MODELS": "gpt-4o,o1"}, "includes MODEL_NAME ('gpt-4o-mini')"),
        ({"MODEL_NAME": "local", "MODELS": "gpt-4o-mini"}, "includes MODEL_NAME ('local')"),
        ({"MODELS": "gpt-4o-mini,gpt 4"}, "comma-separated model ids"),
        ({"MODELS": ",,"}, "comma-separated model ids"),
    ],
)
def test_a_models_list_without_model_name_stops_the_start(
    tmp_path: Path, settings: dict[str, str], expects: str
) -> None:
    result = run_chatsvc("serve", cwd=tmp_path, env=clean_environment(**settings))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "invalid configuration: MODELS=" in lines[0]
    assert expects in lines[0]
    assert not (tmp_path / "chatsvc.db").exists()
