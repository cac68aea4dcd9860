"""How much of a conversation goes upstream: each model's history budget.

``CONTEXT_BUDGET_TOKENS`` is the most the operator allows. A model server that
states its context length caps it: at start (``/v1/models``: vLLM's
``max_model_len``; llama.cpp's ``/props``), or when it refuses a request as
too long and names its limit (OpenAI, vLLM, llama.cpp's ``n_ctx``). What is
left for the history is that length less room for the reply (``LLM_MAX_TOKENS``,
or a quarter of the context), estimated at ``CHARS_PER_TOKEN`` characters a
token: no tokenizer download, so the estimate may be off, and an overflow is
retried once with a shorter history (docs/protocol.md section 4.1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger("chatsvc.context")

CHARS_PER_TOKEN = 4
#: A stated context length that holds for every model the server serves (llama.cpp).
ANY_MODEL = "*"
#: The least room kept for the reply when ``LLM_MAX_TOKENS`` does not say.
MIN_REPLY_TOKENS = 256


def estimate_tokens(chars: int) -> int:
    """Tokens of ``chars`` characters, at ``CHARS_PER_TOKEN`` (rounded up: any text is one)."""
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Window:
    """A model's context as the server stated it, and the history budget it leaves."""

    context_tokens: int
    budget_tokens: int
    source: str


class ContextBudgets:
    """The history budget of each model, in tokens and in characters."""

    def __init__(self, budget_tokens: int, reply_tokens: int | None) -> None:
        self._configured = budget_tokens
        self._reply_tokens = reply_tokens
        self._windows: dict[str, Window] = {}

    def tokens(self, model: str) -> int:
        window = self._windows.get(model)
        return window.budget_tokens if window is not None else self._configured

    def chars(self, model: str) -> int:
        return self.tokens(model) * CHARS_PER_TOKEN

    def cap(self, model: str, context_tokens: int, source: str) -> None:
        """Take the model's stated context length (logged when it lowers the budget)."""
        before = self.tokens(model)
        reserve = self._reply_tokens or max(MIN_REPLY_TOKENS, context_tokens // 4)
        room = context_tokens - reserve if context_tokens > reserve else context_tokens // 2
        budget = max(1, min(self._configured, room))
        self._windows[model] = Window(context_tokens, budget, source)
        if budget < before:
            log.warning(
                "model %s: context %d tokens (%s); history budget lowered to %d tokens",
                model,
                context_tokens,
                source,
                budget,
            )

    def take(self, stated: Mapping[str, tuple[int, str]], models: Iterable[str]) -> None:
        """Cap each model's budget by what its server stated (``ANY_MODEL``: every model)."""
        for model in models:
            found = stated.get(model) or stated.get(ANY_MODEL)
            if found is not None:
                self.cap(model, *found)

    def describe(self, model: str) -> str:
        """One line for the start banner."""
        window = self._windows.get(model)
        if window is None:
            return (
                "not stated by the model server; "
                f"history budget {self._configured} tokens (CONTEXT_BUDGET_TOKENS)"
            )
        return (
            f"{window.context_tokens} tokens ({window.source}); "
            f"history budget {window.budget_tokens} tokens"
        )
