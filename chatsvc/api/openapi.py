"""OpenAPI documentation: operation ids and what the handlers answer besides success.

Every operation names its ``operation_id`` explicitly, in lowerCamelCase, verb first
(``listChats``, ``getChat``, ``updateChat``...): generated clients name their functions
after it (``list_chats``), so it is part of the API and must not follow handler or
path renames. ``OPERATION_ID`` is the rule; the tests hold every operation to it.

Every error body has Litestar's shape plus our stable ``code``; each handler lists
the statuses it can answer, so a generated client knows them all. A handler that takes
a body or parameters lists ``400`` itself: otherwise Litestar documents its own 400,
whose schema lacks ``code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec.operation import Operation

from chatsvc.wire import ErrorCode, TokenBudget

#: The form of every operation id: lowerCamelCase, starting with a verb.
OPERATION_ID = r"^[a-z]+(?:[A-Z][a-z]+)*$"


class ErrorBody(msgspec.Struct, kw_only=True):
    """The body of every error answer; `code` is stable, `detail` is for people."""

    status_code: int
    detail: str
    code: ErrorCode
    extra: list[dict[str, Any]] | dict[str, Any] | None = None
    #: With `quota_exceeded` only: the budget that is spent, how much is used, when it resets.
    quota: TokenBudget | None = None


_MEANING = {
    400: "Invalid input; `detail` and `extra` name the fields (`invalid_message`).",
    401: "Missing, invalid or expired token; or bad credentials (`unauthorized`).",
    403: "Registration is closed (`forbidden`).",
    404: "No such chat or user, or not yours (`not_found`).",
    409: "`busy`, `not_running`, `conflict` or `limit_reached` (see `code`).",
    413: "Content over `MAX_MESSAGE_CHARS` (`too_large`).",
    415: "A body that is not `application/json` (`invalid_message`).",
    422: "The patch does not apply or breaks a limit; nothing changed (`invalid_patch`).",
    429: "Rate limited (`rate_limited`; see `Retry-After`), or, for a route that starts a "
    "reply, a token budget is spent (`quota_exceeded`: `quota` says which, how much is used "
    "and when it resets; the daily one also sets `Retry-After`).",
    502: "The model server failed mid-stream (`llm_error`).",
    503: "The database or the model server is unavailable (`unavailable`, `llm_unavailable`), "
    "or the server is too busy right now (`overloaded`: nothing was done; send the same "
    "request again after `Retry-After` seconds).",
    504: "The model server stalled or the reply took too long (`timeout`).",
}

#: What every authenticated route can answer.
PROTECTED = (401, 429, 503)


def errors(*statuses: int, meaning: Mapping[int, str] | None = None) -> dict[int, ResponseSpec]:
    """Error responses with the ``ErrorBody`` schema; ``meaning`` words a status for one
    operation (``409`` means something else on each route that answers it)."""
    described = {**_MEANING, **(meaning or {})}
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=described[status], generate_examples=False
        )
        for status in sorted(set(statuses))
    }


@dataclass
class PublicOperation(Operation):
    """An operation that needs no token (overrides the app-wide bearer requirement)."""

    def __post_init__(self) -> None:
        self.security = []
