"""``/api/chats/{chat_id}/messages/{message_id}/feedback``: rate a reply (issue 17, point 4)."""

from __future__ import annotations

from litestar import delete, put
from litestar.params import JSONBody

from chatsvc import feedback
from chatsvc.api.chats import AuthRequest, ChatId, MessageId
from chatsvc.api.openapi import PROTECTED, errors
from chatsvc.wire import Feedback, FeedbackUpdate

_PATH = "/api/chats/{chat_id:str}/messages/{message_id:str}/feedback"
_MEANING = {
    404: "No such chat, another user's, or no such message in it (`not_found`).",
    422: "The message is the user's own, not an assistant reply (`not_a_reply`).",
}


@put(
    _PATH,
    tags=["chats"],
    operation_id="setFeedback",
    summary="Rate an assistant message",
    response_description="The rating as stored.",
    responses=errors(*PROTECTED, 400, 404, 415, 422, meaning=_MEANING),
)
async def set_feedback(
    request: AuthRequest, chat_id: ChatId, message_id: MessageId, data: JSONBody[FeedbackUpdate]
) -> Feedback:
    """Thumbs `up` or `down` on a reply, with an optional `comment`; replaces an earlier
    rating of the same message."""
    return await feedback.rate(request.user.id, chat_id, message_id, data)


@delete(
    _PATH,
    tags=["chats"],
    operation_id="deleteFeedback",
    summary="Remove the rating of an assistant message",
    status_code=204,
    response_description="No rating is left (also when there was none).",
    responses=errors(*PROTECTED, 400, 404, 422, meaning=_MEANING),
)
async def delete_feedback(request: AuthRequest, chat_id: ChatId, message_id: MessageId) -> None:
    """Remove your rating of a reply; the same answer when it had none."""
    await feedback.unrate(request.user.id, chat_id, message_id)
