"""What the openai SDK's exceptions become: our ``LLMUnavailable``, ``LLMError`` or
``ContextOverflow``; no other module sees an SDK exception."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, cast

import openai

from chatsvc.errors import ChatsvcError, ContextOverflow, LLMError, LLMUnavailable

log = logging.getLogger("chatsvc.providers")

#: How servers word a prompt longer than the model's context (OpenAI, vLLM, llama.cpp,
#: LM Studio, TGI...), for those that send no code saying so.
_OVERFLOW_WORDS = re.compile(
    r"context[ _](length|window|size)|maximum context|too many tokens|prompt is too long",
    re.IGNORECASE,
)
#: Where the message names the limit: "maximum context length is 4096 tokens" (OpenAI,
#: vLLM), "exceeds the available context size (4096 tokens)" (llama.cpp).
_STATED_LIMIT = re.compile(
    r"maximum context length is (\d+)|context size \((\d+) tokens\)", re.IGNORECASE
)


def refused(exc: openai.APIStatusError) -> ChatsvcError:
    """The error for a request the server answered with an error status."""
    if (overflow := _context_overflow(exc)) is not None:
        log.info("upstream: the prompt is longer than the model's context: %s", exc.message)
        return overflow
    log.warning("upstream refused with HTTP %s: %s", exc.status_code, exc.message)
    status = exc.status_code
    if status == 429 or status >= 500:
        return LLMUnavailable(f"the model server is unavailable (HTTP {status})")
    return LLMError(f"the model server refused the request (HTTP {status})")


def _context_overflow(exc: openai.APIStatusError) -> ContextOverflow | None:
    """The overflow a refusal stands for, with the context length if the server gave it."""
    if exc.status_code not in (400, 413, 422):
        return None
    raw: object = exc.body
    body = cast(dict[str, Any], raw) if isinstance(raw, dict) else {}
    message = str(body.get("message") or exc.message)
    recognised = (
        exc.code == "context_length_exceeded"
        or body.get("type") == "exceed_context_size_error"
        or _OVERFLOW_WORDS.search(message) is not None
    )
    if not recognised:
        return None
    stated = body.get("n_ctx")
    if not isinstance(stated, int) and (match := _STATED_LIMIT.search(message)):
        stated = int(match.group(1) or match.group(2))
    return ContextOverflow(
        "the conversation is longer than the model's context",
        context_tokens=stated if isinstance(stated, int) and stated > 0 else None,
    )


def not_an_outage(exc: BaseException) -> bool:
    """A refusal such as 400 or 401 means the server is up: it does not trip the breaker."""
    if not isinstance(exc, openai.APIStatusError):
        return False
    return exc.status_code < 500 and exc.status_code != 429


def rejects_stream_options(exc: openai.APIStatusError) -> bool:
    """A server that does not know ``stream_options`` refuses it by name ("Unrecognized request
    argument supplied: stream_options" from Azure; FastAPI servers answer 422)."""
    return exc.status_code in (400, 422) and "stream_options" in f"{exc.message} {exc.body}"


def _connect_failure(exc: BaseException) -> OSError | None:
    """The OS error that kept the connection from opening, when that is what happened.

    The SDK's aiohttp transport maps every aiohttp connection error to httpx's
    ``ConnectTimeout`` (its table tries ``ClientConnectionError`` before
    ``ClientConnectorError``), so a refused connection arrives as ``APITimeoutError``;
    the ``OSError`` is down the ``__cause__`` chain. A real timeout has only
    ``TimeoutError`` there (an ``OSError`` too, but no failure to connect).
    """
    cause = exc.__cause__
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def _why(failure: OSError) -> str:
    """What the OS said, in its words: "Connection refused", "Name or service not known"."""
    if failure.errno is not None and failure.errno > 0:
        return os.strerror(failure.errno)
    return failure.strerror or type(failure).__name__


def unreachable(exc: openai.APIConnectionError) -> LLMUnavailable:
    """The error for a request that got no answer; a failed connect is logged (issue 13).

    Logged here, once per request: the SDK's retries happen below this, silently.
    """
    failure = _connect_failure(exc)
    if failure is not None:
        url = exc.request.url
        log.warning(
            "could not connect to the model server at %s:%s: %s", url.host, url.port, _why(failure)
        )
        return LLMUnavailable("could not connect to the model server")
    if isinstance(exc, openai.APITimeoutError):
        return LLMUnavailable("the model server did not answer in time")
    log.warning("upstream unreachable: %s", exc)
    return LLMUnavailable("the model server is unreachable")
