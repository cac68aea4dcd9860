"""How many logins an address and a username may try a minute (issue 12).

A login costs a PBKDF2 hash (0.5-0.8 s of CPU), so the budget is charged
before the hash. Two budgets, both must allow an attempt:

- per address: IPv4 addresses one by one; IPv6 addresses by their /64, which
  one client is usually given whole (counting each address would give it 2**64
  budgets);
- per username, so that many addresses cannot guess one account's password.

The REST login, registration (address only) and the admin's login charge the
same budgets. They live in this process: several servers each keep their own.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable

from chatsvc.errors import RateLimited

WINDOW_SECONDS = 60.0
#: Keys kept before stale ones are swept (a sweep drops keys idle for a whole window).
SWEEP_AT = 10_000


def address_group(host: str) -> str:
    """The key an address is limited by: an IPv4 address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP (a unix socket, a test client): as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Window:
    """At most ``limit`` events per key in any ``WINDOW_SECONDS``."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        events = self._events.get(key)
        if events is None:
            return 0.0
        now = self._clock()
        while events and events[0] <= now - WINDOW_SECONDS:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[0] + WINDOW_SECONDS - now

    def charge(self, key: str) -> None:
        if len(self._events) >= SWEEP_AT:
            self._sweep()
        self._events.setdefault(key, deque()).append(self._clock())

    def _sweep(self) -> None:
        stale = self._clock() - WINDOW_SECONDS
        for key in [k for k, events in self._events.items() if not events or events[-1] <= stale]:
            del self._events[key]
        # Still full (a flood of fresh keys): forget the oldest; their budgets restart.
        for key in list(self._events)[: max(0, len(self._events) - SWEEP_AT // 2)]:
            del self._events[key]


class LoginLimits:
    """The login budgets of one server (``LOGIN_ATTEMPTS_PER_MINUTE`` each)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._addresses = _Window(per_minute, clock)
        self._usernames = _Window(per_minute, clock)

    def charge(self, address: str, username: str | None = None) -> None:
        """Count one attempt, or raise :class:`RateLimited` (nothing counted) when over budget."""
        group = address_group(address)
        wait = self._addresses.wait(group)
        if username is not None:
            wait = max(wait, self._usernames.wait(username.casefold()))
        if wait > 0:
            raise RateLimited(
                "too many login attempts; try again later", retry_after=max(1, math.ceil(wait))
            )
        self._addresses.charge(group)
        if username is not None:
            self._usernames.charge(username.casefold())
