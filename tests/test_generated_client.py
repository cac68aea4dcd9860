"""A Python client generated from the live ``/schema/openapi.json`` drives the REST API.

``openapi-python-client`` (offline, no post-hooks) turns the running server's schema
into a package; the test imports it and goes through register, login, create, list,
get, rename and delete with its typed models, down to the documented ``404`` body.
A second test holds the schema to what makes such a client pleasant: explicit, stable
operation ids, named component schemas, documented errors and a declared security scheme.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from chatsvc.api.openapi import OPERATION_ID
from tests.support import PASSWORD, Server, register_and_login, unique_username
from tests.support.http import tls

PACKAGE = "chatsvc_client"

#: No post-hooks: the generator would otherwise run ruff over its output.
#: Files of no JSON type (issue 17's exports) come to the client as bytes.
GENERATOR_CONFIG = """post_hooks: []
content_type_overrides:
  application/x-ndjson: application/octet-stream
  text/markdown: application/octet-stream
"""

#: The operations anyone may call; every other one needs the bearer token.
PUBLIC = {
    "register",
    "login",
    "refreshToken",
    "logout",
    "getHealth",
    "getReadiness",
    "getShared",
}

#: Error answers whose body is not ``ErrorBody`` (readiness answers its own report).
OTHER_ERROR_BODIES = {("getReadiness", "503"): "Readiness"}

#: Request bodies documented inline: login takes the same fields as JSON or as the OAuth2
#: password form (Swagger's Authorize), read by hand rather than from a typed ``data``.
INLINE_BODIES = {"login"}

#: Answers that are files of no JSON type: every chat as JSON lines (issue 17), which
#: generators cannot parse (the client gets the bytes).
FILE_ANSWERS = {"exportAllChats"}

METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
COMPONENT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_IMPORTS_UNSET = re.compile(r"^from \.\.\.types import [^\n]*\bUnset\b", re.MULTILINE)


def _schema(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/schema/openapi.json", timeout=10, verify=tls())
    assert response.status_code == 200, response.text
    return response.json()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation.get("operationId", ""), operation


def _import_unset_where_used(package: Path) -> None:
    """Work around a generator bug (openapi-python-client issue 1451, open in 0.29): a
    required request body with several content types (login: JSON or the OAuth2 form) is
    annotated ``| Unset`` without importing ``Unset``. Does nothing once that is fixed."""
    for module in (package / "api").rglob("*.py"):
        code = module.read_text()
        if re.search(r"\bUnset\b", code) and not _IMPORTS_UNSET.search(code):
            module.write_text(f"from ...types import Unset\n{code}")


@pytest.fixture
def client_package(server: Server, tmp_path: Path) -> Iterator[ModuleType]:
    """The client generated from the server's schema (no generator warning allowed),
    imported from a temporary directory, then forgotten."""
    schema_path = tmp_path / "openapi.json"
    schema_path.write_bytes(
        httpx.get(f"{server.url}/schema/openapi.json", timeout=10, verify=tls())
        .raise_for_status()
        .content
    )
    config_path = tmp_path / "generator.yaml"
    config_path.write_text(GENERATOR_CONFIG)
    output = tmp_path / "generated" / PACKAGE
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(schema_path),
            "--output-path",
            str(output),
            "--meta",
            "none",
            "--config",
            str(config_path),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (output / "__init__.py").is_file(), generated.stdout
    _import_unset_where_used(output)

    sys.path.insert(0, str(output.parent))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(output.parent))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_generated_client_drives_the_chat_api(server: Server, client_package: ModuleType) -> None:
    def module(name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    models = module("models")
    register, login, refresh_token, get_current_user = (
        module(f"api.auth.{name}")
        for name in ("register", "login", "refresh_token", "get_current_user")
    )
    create_chat, list_chats, get_chat, update_chat, delete_chat = (
        module(f"api.chats.{name}")
        for name in ("create_chat", "list_chats", "get_chat", "update_chat", "delete_chat")
    )
    username = unique_username("generated")

    with client_package.Client(base_url=server.url, raise_on_unexpected_status=True) as public:
        user = register.sync(
            client=public, body=models.RegisterRequest(username=username, password=PASSWORD)
        )
        assert isinstance(user, models.User)
        assert user.username == username
        assert isinstance(user.id, int)

        wrong = login.sync_detailed(
            client=public, body=models.LoginJsonBody(username=username, password="not it!")
        )
        assert wrong.status_code == 401
        assert isinstance(wrong.parsed, models.ErrorBody)
        assert (wrong.parsed.status_code, wrong.parsed.code) == (401, "unauthorized")

        token = login.sync(
            client=public, body=models.LoginJsonBody(username=username, password=PASSWORD)
        )
        assert isinstance(token, models.AccessToken)
        assert token.token_type == "bearer"
        assert token.expires_in > 0
        # The session renews itself through the client too (docs/protocol.md section 1.1).
        renewed = refresh_token.sync(
            client=public, body=models.RefreshRequest(refresh_token=token.refresh_token)
        )
        assert isinstance(renewed, models.AccessToken)
        assert renewed.refresh_token != token.refresh_token
        token = renewed

        anonymous = get_chat.sync_detailed(client=public, chat_id=uuid.uuid4())
        assert anonymous.status_code == 401
        assert isinstance(anonymous.parsed, models.ErrorBody)
        assert anonymous.parsed.code == "unauthorized"

    with client_package.AuthenticatedClient(
        base_url=server.url, token=token.access_token, raise_on_unexpected_status=True
    ) as client:
        me = get_current_user.sync(client=client)
        assert isinstance(me, models.User)
        assert (me.id, me.username) == (user.id, username)

        chat = create_chat.sync(
            client=client,
            body=models.ChatCreate(title="Made by a generated client", system_prompt="Be brief."),
        )
        assert isinstance(chat, models.Chat)
        assert isinstance(chat.id, uuid.UUID)
        assert isinstance(chat.created_at, datetime)
        assert chat.created_at.tzinfo is not None
        assert (chat.title, chat.system_prompt) == ("Made by a generated client", "Be brief.")

        page = list_chats.sync(client=client, limit=10)
        assert isinstance(page, models.ChatPage)
        assert all(isinstance(item, models.Chat) for item in page.items)
        assert [item.id for item in page.items] == [chat.id]
        assert page.next_cursor is None

        fetched = get_chat.sync(client=client, chat_id=chat.id)
        assert isinstance(fetched, models.ChatWithMessages)
        assert (fetched.id, fetched.title, fetched.messages) == (chat.id, chat.title, [])

        renamed = update_chat.sync(
            client=client, chat_id=chat.id, body=models.ChatUpdate(title="Renamed")
        )
        assert isinstance(renamed, models.Chat)
        assert (renamed.id, renamed.title) == (chat.id, "Renamed")
        assert renamed.system_prompt == "Be brief."  # fields left out stay as they are
        assert renamed.updated_at >= chat.updated_at
        assert get_chat.sync(client=client, chat_id=chat.id).title == "Renamed"

        deleted = delete_chat.sync_detailed(client=client, chat_id=chat.id)
        assert deleted.status_code == 204

        gone = get_chat.sync_detailed(client=client, chat_id=chat.id)
        assert gone.status_code == 404
        assert isinstance(gone.parsed, models.ErrorBody)
        assert (gone.parsed.status_code, gone.parsed.code) == (404, "not_found")
        assert list_chats.sync(client=client).items == []


def test_schema_is_fit_for_client_generation(server: Server) -> None:
    spec = _schema(server)
    problems: list[str] = []
    components = spec["components"]

    for name in components["schemas"]:
        if not COMPONENT_NAME.fullmatch(name):
            problems.append(f"component schema {name!r} is not a clean identifier")

    schemes = components.get("securitySchemes", {})
    bearer = [name for name, scheme in schemes.items() if scheme.get("type") == "oauth2"]
    assert len(bearer) == 1, schemes
    password_flow = schemes[bearer[0]]["flows"]["password"]
    assert password_flow["tokenUrl"] == "/api/auth/login"
    if not isinstance(password_flow.get("scopes"), dict):
        # Required by OpenAPI (may be empty); generators refuse the whole document without it.
        problems.append(f"securitySchemes.{bearer[0]}: the password flow has no `scopes`")

    seen: dict[str, str] = {}
    for label, operation_id, operation in _operations(spec):
        if not re.fullmatch(OPERATION_ID, operation_id):
            problems.append(f"{label}: operationId {operation_id!r} is not lowerCamelCase")
        if operation_id in seen:
            problems.append(f"{label}: operationId {operation_id!r} also on {seen[operation_id]}")
        seen[operation_id] = label
        if not operation.get("tags") or not operation.get("summary"):
            problems.append(f"{label}: no tags or no summary")

        responses = operation["responses"]
        security = operation.get("security", spec.get("security", []))
        if operation_id in PUBLIC:
            if security != []:
                problems.append(f"{label}: public, but its security is {security}")
        elif not security or any(set(need) - set(schemes) for need in security):
            problems.append(f"{label}: needs a token, but its security is {security}")
        elif "401" not in responses:
            problems.append(f"{label}: needs a token, but does not document 401")

        takes_input = operation.get("parameters") or operation.get("requestBody")
        if takes_input and "400" not in responses:
            problems.append(f"{label}: takes input, but does not document 400")
        body = operation.get("requestBody", {}).get("content", {})
        for media_type, content in body.items():
            if operation_id not in INLINE_BODIES and "$ref" not in content["schema"]:
                problems.append(f"{label}: inline {media_type} request body")

        for status, response in responses.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if int(status) >= 400:
                expected = OTHER_ERROR_BODIES.get((operation_id, status), "ErrorBody")
                if schema.get("$ref") != f"#/components/schemas/{expected}":
                    problems.append(f"{label}: {status} is not documented as {expected}")
            elif (
                response.get("content")
                and "$ref" not in schema
                and operation_id not in FILE_ANSWERS
            ):
                problems.append(f"{label}: {status} body is not a named component schema")

    assert set(seen) >= PUBLIC, sorted(seen)
    assert not problems, "\n".join(problems)


def test_generated_client_authenticates_with_an_api_key(
    server: Server, client_package: ModuleType
) -> None:
    """A service's whole life: a user makes a key with their login token, a service uses it
    as its bearer token, and once revoked the key is refused (issue 16)."""

    def module(name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    models = module("models")
    get_current_user = module("api.auth.get_current_user")
    create_chat, list_chats = (module(f"api.chats.{n}") for n in ("create_chat", "list_chats"))
    create_api_key, list_api_keys, revoke_api_key = (
        module(f"api.keys.{n}") for n in ("create_api_key", "list_api_keys", "revoke_api_key")
    )
    user = register_and_login(server)

    with client_package.AuthenticatedClient(
        base_url=server.url, token=user.token, raise_on_unexpected_status=True
    ) as owner:
        made = create_api_key.sync(client=owner, body=models.ApiKeyCreate(name="reporting"))
        assert isinstance(made, models.NewApiKey)
        assert made.key.startswith("csk_")
        assert made.prefix == made.key[:12]

        with client_package.AuthenticatedClient(
            base_url=server.url, token=made.key, raise_on_unexpected_status=True
        ) as service:
            me = get_current_user.sync(client=service)
            assert (me.id, me.username) == (user.id, user.username)
            chat = create_chat.sync(client=service, body=models.ChatCreate(title="By a service"))
            assert isinstance(chat, models.Chat)
            assert [c.id for c in list_chats.sync(client=service).items] == [chat.id]
            minted = create_api_key.sync_detailed(
                client=service, body=models.ApiKeyCreate(name="minted by a key")
            )
            assert minted.status_code == 403
            assert isinstance(minted.parsed, models.ErrorBody)
            assert minted.parsed.code == "forbidden"

            [listed] = list_api_keys.sync(client=owner).items
            assert isinstance(listed, models.ApiKey)
            assert (listed.id, listed.name, listed.prefix) == (made.id, "reporting", made.prefix)
            assert listed.last_used_at is not None
            assert not hasattr(listed, "key")

            assert revoke_api_key.sync_detailed(client=owner, key_id=made.id).status_code == 204
            refused = get_current_user.sync_detailed(client=service)
            assert refused.status_code == 401
            assert isinstance(refused.parsed, models.ErrorBody)
            assert refused.parsed.code == "unauthorized"
