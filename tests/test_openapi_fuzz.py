"""Schemathesis against the live server's ``/schema/openapi.json`` (both engines).

Every operation in the schema gets schemathesis' coverage cases (boundary and
invalid values) and ``EXAMPLES_PER_OPERATION`` random ones, as a user of its own
(bearer token; the shared users' chats stay as other tests left them). Each answer
must not be a server error and must conform to the schema: a documented status
code and content type, a body matching its documented schema; and requests the
schema calls invalid must be refused. Random UUIDs only ever reach "not found", so
about half the cases of the chat and user routes are pointed at a real chat (with
a stored exchange) or at the user's own id.

``POST /api/chats/{chat_id}/messages`` stays in: on a real chat it runs a real
generation, which the fake upstream answers in milliseconds.

A second test checks what fuzzing with a token cannot see: how each operation
answers without one, against its ``security`` and documented responses.

This runs schemathesis' engine (what ``schemathesis run`` does) rather than its
pytest plugin, whose fixture-loaded schemas (``schemathesis.pytest.from_fixture``)
fail on pytest 9.2 (they set ``Function._nodeid``, which pytest 9.2 dropped).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.generation.meta import ParameterLocation

from tests.support import Server, User, register_and_login, unique_username
from tests.support.http import tls

#: Random cases per operation (the coverage phase adds its own boundary cases).
EXAMPLES_PER_OPERATION = 25

#: The operations, fuzzed in groups of five to ten, one test each (a path pattern, and the
#: methods, all if none): the suite's workers fuzz them side by side, where one test of all
#: 38 kept one worker busy for over a minute at the end of the run (and the chats' eleven
#: writes in one group, 40-50 s). ``rest`` is what no other group takes, so every
#: operation is in exactly one.
_ACCOUNT = "auth|me|keys|users|usage"
GROUPS: dict[str, tuple[str, list[str] | None]] = {
    "chats-read": (r"^/api/chats", ["GET"]),
    "chats-post": (r"^/api/chats", ["POST"]),
    "chats-change": (r"^/api/chats", ["PUT", "PATCH", "DELETE"]),
    "account": (rf"^/api/({_ACCOUNT})\b", None),
    "rest": (rf"^(?!/api/(chats|{_ACCOUNT})\b)", None),
}

#: Whether answers conform to the schema, no 5xx, and invalid input refused. Left out:
#: ``positive_data_acceptance``, which expects every schema-valid cursor to be accepted,
#: but cursors are opaque strings that only the server issues.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


#: schemathesis's default answers to invalid input, and 413: a body over Litestar's size
#: limit is refused before it is read.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def _config(token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "request-timeout": 30,
            "workers": 1,
            "continue-on-failure": True,  # report every kind of failure, not just the first
            "generation": {
                "max-examples": EXAMPLES_PER_OPERATION,
                "database": "none",  # no example database on disk
                "deterministic": bool(os.environ.get("CI")),  # CI: the same cases every run
                # Unknown query parameters are ignored, not refused (docs/protocol.md,
                # "Conventions"): a request with one is not invalid input.
                "allow-extra-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
                "negative_data_rejection": {
                    "enabled": True,
                    "expected-statuses": REJECTIONS,
                },
            },
        }
    )


def _chat_maker(user: User) -> Callable[[], str]:
    def make() -> str:
        with user.client() as client:
            response = client.post("/api/chats", json={})
            assert response.status_code == 201, response.text
            return response.json()["id"]

    return make


@pytest.fixture(scope="session")
def fuzzer(server: Server) -> User:
    return register_and_login(server, unique_username("fuzz"))


@pytest.fixture(scope="session")
def real_chat(fuzzer: User) -> str:
    """A chat of the fuzzer's with a finished exchange in it."""
    chat_id = _chat_maker(fuzzer)()
    with fuzzer.client() as client:
        reply = client.post(f"/api/chats/{chat_id}/messages", json={"content": "hello"})
    assert reply.status_code == 200, reply.text
    return chat_id


def _load_schema(server: Server, user: User, real_chat: str, group: str) -> Any:
    schema = schemathesis.openapi.from_url(
        f"{server.url}/schema/openapi.json", config=_config(user.token), timeout=30
    )
    path_regex, methods = GROUPS[group]
    schema = schema.include(path_regex=path_regex, method=methods)
    # Logging out everywhere would refuse the fuzzer's token for every operation after it
    # (tests/test_sessions.py covers it).
    schema = schema.exclude(operation_id="logoutEverywhere")
    fresh_chat = _chat_maker(user)

    @schema.hook
    def flatmap_case(context: Any, case: schemathesis.Case) -> st.SearchStrategy:
        """Half the time, aim a case's ids at things that exist."""
        parameters = case.path_parameters or {}
        if not {"chat_id", "user_id"} & parameters.keys():
            return st.just(case)

        def aimed(_: object) -> schemathesis.Case:
            if case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH):
                return case  # an invalid id stays invalid: its refusal is what is checked
            if "chat_id" in parameters:  # DELETE gets a chat of its own
                deleting = case.method.upper() == "DELETE"
                parameters["chat_id"] = fresh_chat() if deleting else real_chat
            if "user_id" in parameters:
                parameters["user_id"] = user.id
            return case

        return st.one_of(st.just(case), st.just(None).map(aimed))

    return schema


def _failures(event: events.ScenarioFinished) -> dict[tuple[str, str, str], str]:
    """The failed checks of one operation, one example each per (operation, status, check)."""
    found: dict[tuple[str, str, str], str] = {}
    for case_id, checks in event.recorder.checks.items():
        interaction = event.recorder.interactions.get(case_id)
        response = interaction.response if interaction else None
        status = str(response.status_code) if response is not None else "no answer"
        body = response.content[:300].decode(errors="replace") if response is not None else ""
        for check in checks:
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            failure = check.failure_info.failure
            found.setdefault(
                (event.recorder.label, status, failure.code),
                f"{event.recorder.label} -> {status}: {failure.code} {failure.title}: "
                f"{' '.join(failure.message.split())}\n    body: {body}\n"
                f"    {check.failure_info.code_sample}",
            )
    return found


def test_every_operation_is_fuzzed_in_exactly_one_group(server: Server) -> None:
    spec = httpx.get(f"{server.url}/schema/openapi.json", timeout=10, verify=tls()).json()
    counts: dict[str, int] = {}
    for path, operations in spec["paths"].items():
        for method in operations.keys() & {"get", "post", "put", "patch", "delete"}:
            counts[f"{method.upper()} {path}"] = sum(
                bool(re.search(pattern, path)) and (methods is None or method.upper() in methods)
                for pattern, methods in GROUPS.values()
            )
    assert len(counts) > 30
    assert {label: n for label, n in counts.items() if n != 1} == {}


# About 10 s alone for the largest group; with coverage on and the other workers busy,
# several times that, and past the suite's 120 s before the groups were split.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("group", GROUPS)
def test_api_conforms_to_its_openapi_schema(
    server: Server, fuzzer: User, real_chat: str, group: str
) -> None:
    schema = _load_schema(server, fuzzer, real_chat, group)
    problems: dict[tuple[str, str, str], str] = {}
    finished = False
    fuzzed: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            fuzzed.add(event.recorder.label)
            if event.status == Status.FAILURE:
                for key, text in _failures(event).items():
                    problems.setdefault(key, text)
        elif isinstance(event, events.NonFatalError):
            problems[(event.label, "", "error")] = f"{event.label}: {event.info.format()}"
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            finished = True
    assert finished
    assert len(fuzzed) >= 3, f"{group}: only {sorted(fuzzed)} fuzzed"
    if problems:
        report = "\n".join(problems[key] for key in sorted(problems))
        pytest.fail(f"{len(problems)} kinds of schemathesis failure:\n{report}", pytrace=False)


def test_every_operation_documents_how_it_answers_a_missing_token(server: Server) -> None:
    """Routes that need the token say so (``security``) and document their 401; others don't."""
    spec = httpx.get(f"{server.url}/schema/openapi.json", timeout=10, verify=tls()).json()
    problems = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            url = path.replace("{chat_id}", str(uuid.uuid4())).replace("{user_id}", "1")
            body = {} if method in ("post", "patch", "put") else None
            status = httpx.request(
                method, f"{server.url}{url}", json=body, timeout=10, verify=tls()
            ).status_code
            security = operation.get("security", spec.get("security", []))
            needs_token = any(requirement for requirement in security)
            label = f"{method.upper()} {path}"
            if status == 401 and not needs_token:
                problems.append(f"{label}: answers 401 without a token, declares no security")
            if status == 401 and "401" not in operation["responses"]:
                problems.append(f"{label}: answers 401 without a token, 401 not documented")
            if status != 401 and needs_token:
                problems.append(f"{label}: answers {status} without a token, declares {security}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_the_fuzzed_server_still_answers(server: Server) -> None:
    """Runs after the fuzzing in this module: the server survived it."""
    assert httpx.get(f"{server.url}/health/ready", timeout=10, verify=tls()).status_code == 200
