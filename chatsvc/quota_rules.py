"""Token budgets (issue 16): what a user and a chat may spend, and the refusal when it is spent.

The one place of the rule and its words. A reply may start while the tokens counted are
under the budget, so the reply that crosses it finishes (no half answers) and the next
one is refused. What is counted: ``prompt_tokens + completion_tokens`` of the assistant
messages (estimates where the upstream sent none), per user for replies started in the
current UTC day (``DAILY_TOKEN_BUDGET``, or the user's override; each reply's added to the
user's ``daily_spend`` row of that day as its end is stored, so deleting a chat gives none
back), per chat for all its replies (``CHAT_TOKEN_BUDGET``). The store reads them in the
transaction that admits a reply (``store.create_exchange``, ``store.create_regeneration``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from msgspec import Struct

from chatsvc.errors import QuotaExceeded
from chatsvc.wire import TokenBudget

#: What tells the time of the budgets (``datetime.now(UTC)``; tests inject their own).
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def utc_day(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC day ``moment`` is in: its midnight, and the next one (when the budget resets)."""
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


class Spent(Struct, frozen=True, kw_only=True):
    """What the store found for one user (and chat): the tokens counted, and the override."""

    today: int  # the user's tokens in replies started since the day's start
    in_chat: int  # the chat's tokens, all time (0 for a new chat)
    overridden: bool = False  # the user has a row in `user_quota`
    override: int | None = None  # its daily budget; None there: no daily limit


class QuotaRule(Struct, frozen=True, kw_only=True):
    """The budgets a reply starts under, at one moment (``now``, from the injected clock)."""

    daily: int | None  # DAILY_TOKEN_BUDGET; None: no limit unless the user has an override
    chat: int | None  # CHAT_TOKEN_BUDGET; None: no limit
    now: datetime

    @property
    def day(self) -> tuple[datetime, datetime]:
        return utc_day(self.now)

    def daily_budget(self, spent: Spent) -> int | None:
        """The user's override when there is one (even "no limit"), else the setting."""
        return spent.override if spent.overridden else self.daily

    def today(self, spent: Spent) -> TokenBudget:
        """The user's tokens today against the daily budget (``GET /api/me``)."""
        return TokenBudget(
            scope="day", used=spent.today, budget=self.daily_budget(spent), resets_at=self.day[1]
        )

    def check(self, spent: Spent) -> None:
        """``QuotaExceeded`` when the daily or the chat's budget is spent (the daily one first:
        it says when it resets)."""
        daily = self.daily_budget(spent)
        if daily is not None and spent.today >= daily:
            resets_at = self.day[1]
            wait = (resets_at - self.now).total_seconds()
            raise QuotaExceeded(
                f"your daily token budget is spent ({_count(spent.today)} of {_count(daily)} "
                f"tokens used today); it resets at {resets_at:%H:%M} UTC, "
                f"in {_duration(wait)}",
                quota=self.today(spent),
                retry_after=max(1, math.ceil(wait)),
            )
        if self.chat is not None and spent.in_chat >= self.chat:
            raise QuotaExceeded(
                f"this chat's token budget is spent ({_count(spent.in_chat)} of "
                f"{_count(self.chat)} tokens used); start a new chat to go on",
                quota=TokenBudget(
                    scope="chat", used=spent.in_chat, budget=self.chat, resets_at=None
                ),
                retry_after=None,
            )


def _count(tokens: int) -> str:
    return f"{tokens:,}"


def _duration(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
