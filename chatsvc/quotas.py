"""Token budgets as the use cases see them: the rule a reply starts under, and a user's day.

``Quotas`` holds the settings and the clock (``create_app(clock=...)``: tests move the
time to the next UTC day instead of waiting for it).
"""

from __future__ import annotations

from chatsvc.quota_rules import Clock, QuotaRule, system_clock
from chatsvc.quota_store import spent
from chatsvc.settings import Settings
from chatsvc.wire import TokenBudget


class Quotas:
    """``DAILY_TOKEN_BUDGET`` and ``CHAT_TOKEN_BUDGET`` at the clock's time."""

    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        self._daily = settings.daily_token_budget
        self._chat = settings.chat_token_budget
        self._clock = clock

    def rule(self) -> QuotaRule:
        """The budgets a reply starting now is admitted under (``Admission.quota``)."""
        return QuotaRule(daily=self._daily, chat=self._chat, now=self._clock())

    async def today(self, owner: int) -> TokenBudget:
        """The owner's tokens today against their daily budget (``GET /api/me``)."""
        rule = self.rule()
        return rule.today(await spent(owner, rule.day[0]))
