"""LLM providers behind one small port (:mod:`.port`): ``stream(request)`` yields deltas.

- :mod:`.openai_compatible`: any OpenAI-compatible server, through the official SDK;
  :mod:`.chunks` decodes its stream (pure), :mod:`.failures` translates its errors.
- :mod:`.echo`: the stand-in used when no upstream is configured. Not an LLM.
"""

from __future__ import annotations

from chatsvc.providers.echo import EchoProvider
from chatsvc.providers.openai_compatible import PROBE_SECONDS, OpenAIProvider
from chatsvc.providers.port import (
    ChatTurn,
    CircuitState,
    CompletionRequest,
    Delta,
    LLMProvider,
    StatedContext,
)
from chatsvc.settings import Settings
from chatsvc.tree import ToolCall

__all__ = [
    "PROBE_SECONDS",
    "ChatTurn",
    "CircuitState",
    "CompletionRequest",
    "Delta",
    "EchoProvider",
    "LLMProvider",
    "OpenAIProvider",
    "StatedContext",
    "ToolCall",
    "create_provider",
]


def create_provider(settings: Settings) -> LLMProvider:
    if settings.llm_provider == "openai":
        return OpenAIProvider(settings)
    return EchoProvider(settings.echo_token_delay)
