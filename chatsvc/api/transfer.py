"""Exports and imports (issue 17, point 2): thin handlers over :mod:`chatsvc.exports` and
:mod:`chatsvc.imports`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import QueryParameter
from litestar.response import Stream

from chatsvc import exports, imports
from chatsvc.api.chats import AuthRequest, ChatId
from chatsvc.api.openapi import PROTECTED, errors
from chatsvc.api.problems import UnsupportedMediaType
from chatsvc.errors import TooLarge
from chatsvc.settings import Settings
from chatsvc.wire import ChatExport, ExportFormat, ImportReport

_MEDIA = {"json": "application/json", "markdown": "text/markdown"}  # Litestar adds the charset
_EXTENSION = {"json": "json", "markdown": "md"}


@dataclass
class _ChatFileOperation(Operation):
    """The chat's export is JSON or, with `format=markdown`, Markdown: both documented."""

    def __post_init__(self) -> None:
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse) and answer.content is not None:
            answer.content["text/markdown"] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING)
            )


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@get(
    "/api/chats/{chat_id:str}/export",
    tags=["export"],
    operation_id="exportChat",
    operation_class=_ChatFileOperation,
    summary="Export a chat",
    responses={
        200: ResponseSpec(
            data_container=ChatExport,
            description="The chat as a file: `chatsvc.export` JSON (`ChatExport`), or with "
            "`format=markdown` the active conversation as `text/markdown`.",
            generate_examples=False,
        ),
        **errors(*PROTECTED, 400, 404),
    },
)
async def export_chat(
    request: AuthRequest,
    chat_id: ChatId,
    file_format: Annotated[
        ExportFormat,
        QueryParameter(
            name="format",
            description="`json`: every branch, statuses, usage and feedback (what "
            "`POST /api/import` takes back); `markdown`: the active conversation, to read.",
        ),
    ] = "json",
) -> Response[bytes]:
    """Download one chat, as an attachment named after its title."""
    export = await exports.export_chat(request.user.id, chat_id)
    body = (
        exports.to_json(export) if file_format == "json" else exports.to_markdown(export).encode()
    )
    name = exports.filename(export.chat.title, _EXTENSION[file_format])
    return Response(body, media_type=_MEDIA[file_format], headers=_attachment(name))


@get(
    "/api/me/export",
    tags=["export"],
    operation_id="exportAllChats",
    media_type="application/x-ndjson",
    summary="Export every chat",
    response_description="JSON lines (`application/x-ndjson`): one `ChatExport` per chat, "
    "oldest chat first.",
    responses=errors(*PROTECTED),
)
async def export_all(request: AuthRequest) -> Stream:
    """Download every chat of yours, streamed one chat at a time (`application/x-ndjson`);
    each line is what `GET /api/chats/{chat_id}/export` answers."""
    return Stream(
        exports.export_all(request.user.id),
        media_type="application/x-ndjson",
        headers=_attachment("chatsvc-export.jsonl"),
    )


#: What `POST /api/import` takes (JSON, JSON lines; some browsers send a file as text).
_IMPORT_TYPES = frozenset({"application/json", "application/x-ndjson", "application/jsonl"})


@post(
    "/api/import",
    tags=["export"],
    operation_id="importChats",
    summary="Import chats",
    status_code=200,
    response_description="The new chats' ids, and what was left out and why.",
    responses=errors(
        *PROTECTED,
        409,
        413,
        415,
        422,
        meaning={
            409: "You would keep more than `MAX_CHATS_PER_USER` chats (`limit_reached`); "
            "nothing was imported.",
            413: "The file is over `IMPORT_MAX_BYTES`, or holds more than `IMPORT_MAX_CHATS` "
            "chats (`too_large`); nothing was imported.",
            415: "A body that is not `application/json` or `application/x-ndjson` "
            "(`invalid_message`).",
            422: "Not a chatsvc export nor ChatGPT's `conversations.json`, or a field of the "
            "wrong type, or a broken tree (`invalid_import`; `detail` says where); nothing "
            "was imported.",
        },
    ),
    request_max_body_size=None,  # bounded below by IMPORT_MAX_BYTES, a setting
)
async def import_chats(request: AuthRequest, settings: NamedDependency[Settings]) -> ImportReport:
    """Import a file as new chats of yours: a chatsvc export (`GET /api/chats/{chat_id}/export`
    or the JSON lines of `GET /api/me/export`), or ChatGPT's `conversations.json`. The whole
    file is imported in one transaction, or nothing of it."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in _IMPORT_TYPES:
        raise UnsupportedMediaType(
            "send the file as application/json (or application/x-ndjson for JSON lines)"
        )
    limit = settings.import_max_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the file is over IMPORT_MAX_BYTES ({limit} bytes)")
    return await imports.import_file(
        request.user.id,
        bytes(body),
        imports.ImportLimits(
            max_bytes=limit,
            max_chats=settings.import_max_chats,
            max_messages=settings.import_max_messages_per_chat,
            max_chats_per_user=settings.max_chats_per_user,
            models=settings.model_choices,
            max_tokens_limit=settings.llm_max_tokens_limit,
        ),
    )
