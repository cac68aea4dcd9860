"""The services ``create_app`` builds once, handed to handlers by dependency injection.

Handlers ask for a service by its name here (``chats: Chats``), or for all of
them (``services: Services``); none reads the app's ``state``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from litestar.di import Provide
from piccolo.engine.base import Engine

from chatsvc.access import AccessWatch, SocketCounter
from chatsvc.accounts import Accounts
from chatsvc.api.security import TokenIssuer
from chatsvc.bus import EventBus
from chatsvc.chats import Chats
from chatsvc.context import ContextBudgets
from chatsvc.events import ChatEvents
from chatsvc.generation import Generations, Launcher
from chatsvc.keys import ApiKeys
from chatsvc.providers import LLMProvider
from chatsvc.quotas import Quotas
from chatsvc.sessions import Sessions
from chatsvc.settings import Settings
from chatsvc.shares import Shares
from chatsvc.telemetry import Telemetry
from chatsvc.trees import Trees


@dataclass(frozen=True, kw_only=True, eq=False)
class Services:
    """Everything the handlers use, built from one ``Settings`` (``create_app``)."""

    settings: Settings
    engine: Engine[Any]
    bus: EventBus
    access: AccessWatch
    accounts: Accounts
    events: ChatEvents
    telemetry: Telemetry
    provider: LLMProvider
    trees: Trees
    budgets: ContextBudgets
    generations: Generations
    launcher: Launcher  # starts replies: generations.launcher
    chats: Chats
    tokens: TokenIssuer
    sessions: Sessions
    sockets: SocketCounter
    quotas: Quotas  # token budgets at the app's clock (GET /api/me; the launcher's admissions)
    keys: ApiKeys
    shares: Shares  # share links (issue 17)

    def dependencies(self) -> dict[str, Provide]:
        """Each service under its name, and all of them as ``services``."""
        provided = {field.name: _constant(getattr(self, field.name)) for field in fields(self)}
        return {**provided, "services": _constant(self)}


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, sync_to_thread=False, use_cache=True)
