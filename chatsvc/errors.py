"""Our error tree. Each error has a stable ``code`` (docs/protocol.md section 2) and an
HTTP status."""

from __future__ import annotations

from typing import ClassVar

from chatsvc.wire import ErrorCode, TokenBudget


class ChatsvcError(Exception):
    """Base of every error the application layer raises on purpose."""

    code: ClassVar[ErrorCode] = "internal"
    status_code: ClassVar[int] = 500
    #: Seconds after which the same request may succeed (``Retry-After``); None: not said.
    retry_after: float | None = None
    #: With ``quota_exceeded``: the budget that is spent, for the error body and frame.
    quota: TokenBudget | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ChatsvcError):
    code = "invalid_message"
    status_code = 400


class SettingRefused(ChatsvcError):
    """A well-formed chat setting this server does not allow: a model not offered, a
    ``max_tokens`` over ``LLM_MAX_TOKENS_LIMIT`` (issue 16)."""

    code = "invalid_message"
    status_code = 422


class ModelNotOffered(SettingRefused):
    """A well-formed model id that is not in ``MODELS`` (issue 12: no free text upstream)."""


class TooLarge(ChatsvcError):
    code = "too_large"
    status_code = 413


class Unauthorized(ChatsvcError):
    code = "unauthorized"
    status_code = 401


class Forbidden(ChatsvcError):
    code = "forbidden"
    status_code = 403


class NotFound(ChatsvcError):
    """Also raised for other users' resources: never reveal that they exist."""

    code = "not_found"
    status_code = 404


class Conflict(ChatsvcError):
    code = "conflict"
    status_code = 409


class StaleVersion(ChatsvcError):
    """A change against a version that is no longer the current one."""

    code = "stale_version"
    status_code = 409


class InvalidPatch(ChatsvcError):
    """A change that is not valid or breaks a limit; nothing of it was applied."""

    code = "invalid_patch"
    status_code = 422


class Busy(ChatsvcError):
    """A generation already runs in that chat."""

    code = "busy"
    status_code = 409


class NotRunning(ChatsvcError):
    """No running generation matches (finished, unknown, or another user's)."""

    code = "not_running"
    status_code = 409


class RateLimited(ChatsvcError):
    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(ChatsvcError):
    """A reply refused before it started: the user's daily token budget, or the chat's, is
    spent (``DAILY_TOKEN_BUDGET``, ``CHAT_TOKEN_BUDGET``, a per-user override)."""

    code = "quota_exceeded"
    status_code = 429

    def __init__(self, message: str, *, quota: TokenBudget, retry_after: float | None) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after = retry_after


class NotAReply(ChatsvcError):
    """Feedback on a message that is no assistant reply (issue 17)."""

    code = "not_a_reply"
    status_code = 422


class InvalidImport(ChatsvcError):
    """An import file that is not one of the formats taken, or breaks their rules: nothing
    of it was stored (issue 17)."""

    code = "invalid_import"
    status_code = 422


class LimitReached(ChatsvcError):
    """A cap on what one user may keep (``MAX_CHATS_PER_USER``, ``TREE_MAX_BYTES_PER_USER``):
    delete something first."""

    code = "limit_reached"
    status_code = 409


class LLMUnavailable(ChatsvcError):
    """The upstream could not be reached or refused before the first token."""

    code = "llm_unavailable"
    status_code = 503


class LLMError(ChatsvcError):
    """The upstream failed while it streamed."""

    code = "llm_error"
    status_code = 502


class ContextOverflow(ChatsvcError):
    """The conversation does not fit the model's context: the upstream said so, or the
    newest message alone is over the history budget (refused before calling it)."""

    code = "too_large"
    status_code = 413

    def __init__(self, message: str, *, context_tokens: int | None = None) -> None:
        super().__init__(message)
        #: The model's context length, when the server stated it.
        self.context_tokens = context_tokens


class EmptyReply(LLMError):
    """The upstream answered and sent nothing at all (llama-cpp-python's answer to a
    prompt longer than its context, among other causes)."""


class GenerationTimeout(ChatsvcError):
    code = "timeout"
    status_code = 504


class Overloaded(ChatsvcError):
    """The server is too busy to take this now; nothing was done, and it may be retried."""

    code = "overloaded"
    status_code = 503

    def __init__(
        self,
        message: str = "the database is busy; try again in a moment",
        *,
        retry_after: float = 1.0,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InternalError(ChatsvcError):
    code = "internal"
    status_code = 500
