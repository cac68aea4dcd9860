"""OpenAPI documentation of what the handlers answer besides success.

Every error body has Litestar's shape plus our stable ``code``; each handler
lists the statuses it can answer, so a generated client knows them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec.operation import Operation


class ErrorBody(msgspec.Struct, kw_only=True):
    status_code: int
    detail: str
    code: str
    extra: list[dict[str, Any]] | dict[str, Any] | None = None


_MEANING = {
    400: "Invalid input; `detail` and `extra` name the fields (`invalid_message`).",
    401: "Missing, invalid or expired token; or bad credentials (`unauthorized`).",
    403: "Registration is closed (`forbidden`).",
    404: "No such chat or user, or not yours (`not_found`).",
    409: "`busy`, `not_running` or `conflict` (see `code`).",
    413: "Content over `MAX_MESSAGE_CHARS` (`too_large`).",
    429: "Rate limited (`rate_limited`); see `Retry-After`.",
    502: "The model server failed mid-stream (`llm_error`).",
    503: "The database or the model server is unavailable (`unavailable`, `llm_unavailable`).",
    504: "The model server stalled or the reply took too long (`timeout`).",
}

#: What every authenticated route can answer.
PROTECTED = (401, 429, 503)


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_MEANING[status], generate_examples=False
        )
        for status in sorted(set(statuses))
    }


@dataclass
class PublicOperation(Operation):
    """An operation that needs no token (overrides the app-wide bearer requirement)."""

    def __post_init__(self) -> None:
        self.security = []
