"""Whether each open socket's user may still be connected (issue 12, point 2).

A token is checked once when a socket opens; after that the user can be
deactivated, lose staff, or have their tokens revoked, by our own code or by
an operator writing the table directly in the Piccolo admin. So:

- every ``WS_RECHECK_SECONDS`` one query reads the users of all open sockets
  of this instance, and a socket whose user is gone, deactivated, no longer
  staff (if it was), or whose token version was raised, is revoked;
- where our own code changes a user (:meth:`Accounts.change_user`), the
  change is announced on the bus, and every instance re-checks that user's
  sockets at once instead of at its next round.

A socket opened with an API key (issue 16) is held to its key instead of the
token version: the same query round also reads those keys, and a key revoked,
deleted or past its expiry closes its sockets; revoking one announces its
user's change on the bus like an account change.

Token expiry: one timer for every socket of the instance (a heap by expiry time),
rather than a sleeping task per socket: an idle socket costs memory, not a task
(docs/performance.md, idle sockets).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from typing import Protocol, Self
from uuid import UUID

import anyio
import anyio.abc

from chatsvc import key_store, store
from chatsvc.bus import ACCOUNTS_CHANNEL, AccountChanged, EventBus, start_reader
from chatsvc.records import KeyState, UserAccess
from chatsvc.tasks import background_tasks

log = logging.getLogger("chatsvc.access")

#: Users read per query; a round with more open users makes several queries.
BATCH = 500

#: Close reasons (close code 4401), docs/protocol.md.
DEACTIVATED = "user deactivated"
REVOKED = "token revoked"
DEMOTED = "staff rights withdrawn"
EXPIRED = "token expired"
KEY_REVOKED = "API key revoked"
KEY_EXPIRED = "API key expired"


class Guarded(Protocol):
    """An open socket, as the watch sees it."""

    @property
    def user_id(self) -> int: ...
    @property
    def token_version(self) -> int: ...
    @property
    def staff(self) -> bool: ...
    @property
    def expires_at(self) -> float:
        """When its token expires (Unix time)."""
        ...

    @property
    def key_id(self) -> UUID | None:
        """The API key it was opened with; ``None``: a login token."""
        ...

    def revoke(self, reason: str) -> None: ...


def verdict(guarded: Guarded, user: UserAccess | None, key: KeyState | None = None) -> str | None:
    """Why ``guarded`` must close given its user's row (and its key's) now, or ``None``."""
    if user is None or not user.active:
        return DEACTIVATED
    if guarded.key_id is not None:
        reason = key_verdict(key)
        if reason is not None:
            return reason
    elif user.token_version != guarded.token_version:
        return REVOKED
    if guarded.staff and not user.admin:
        return DEMOTED
    return None


def key_verdict(key: KeyState | None) -> str | None:
    """Why a socket opened with this API key must close; ``key`` ``None``: the row is gone."""
    if key is None or key.revoked_at is not None:
        return KEY_REVOKED
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        return KEY_EXPIRED
    return None


class AccessWatch(anyio.AsyncContextManagerMixin):
    """The open sockets of this instance by user, re-checked against the database."""

    def __init__(self, bus: EventBus, seconds: float) -> None:
        self._bus = bus
        self.seconds = seconds
        self._open: dict[int, set[Guarded]] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._expiries = _Expiries()

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        """The re-check rounds and the account-change reader run until the body ends."""
        async with background_tasks() as task_group:
            self._task_group = task_group
            task_group.start_soon(self._rounds, name="access re-check")
            task_group.start_soon(self._expiries.run, name="token expiry")
            if self._bus.shared:
                await start_reader(
                    task_group,
                    self._listen,
                    name="account changes",
                    lost="account changes on other instances may reach sockets here late",
                )
            yield self

    def watch(self, guarded: Guarded) -> None:
        self._open.setdefault(guarded.user_id, set()).add(guarded)
        self._expiries.add(guarded)

    def forget(self, guarded: Guarded) -> None:
        self._expiries.discard(guarded)
        sockets = self._open.get(guarded.user_id)
        if sockets is not None:
            sockets.discard(guarded)
            if not sockets:
                del self._open[guarded.user_id]

    def changed(self, user_id: int) -> None:
        """Our code changed this user: re-check their sockets here and on every instance."""
        message = AccountChanged(origin=self._bus.instance, user_id=user_id)
        self._bus.publish(ACCOUNTS_CHANNEL, message)
        self._check_soon(user_id)

    def _check_soon(self, user_id: int) -> None:
        if self._task_group is not None and user_id in self._open:
            self._task_group.start_soon(self._check_logged, [user_id])

    async def check(self, user_ids: Iterable[int]) -> None:
        """One query per ``BATCH`` users; revoke the sockets that may not stay."""
        ids = sorted(set(user_ids))
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            users = {user.id: user for user in await store.access_of(batch)}
            keys = await self._keys_of(batch)
            for user_id in batch:
                for guarded in list(self._open.get(user_id, ())):
                    key = None if guarded.key_id is None else keys.get(guarded.key_id)
                    reason = verdict(guarded, users.get(user_id), key)
                    if reason is not None:
                        log.info("socket of user %d closed: %s", user_id, reason)
                        guarded.revoke(reason)

    async def _keys_of(self, user_ids: list[int]) -> dict[UUID, KeyState]:
        """The API keys of these users' open sockets, in one query (none: no query)."""
        key_ids = {
            guarded.key_id
            for user_id in user_ids
            for guarded in self._open.get(user_id, ())
            if guarded.key_id is not None
        }
        return {key.id: key for key in await key_store.key_states(sorted(key_ids))}

    async def _check_logged(self, user_ids: list[int]) -> None:
        try:
            await self.check(user_ids)
        except Exception as exc:  # this task's error boundary: the next round tries again
            log.error("could not re-check open sockets: %s: %s", type(exc).__name__, exc)

    async def _rounds(self) -> None:
        while True:
            await anyio.sleep(self.seconds)
            if self._open:
                await self._check_logged(list(self._open))

    async def _listen(self, ready: anyio.Event) -> None:
        messages = self._bus.listen(ACCOUNTS_CHANNEL, ready)
        async with aclosing(messages):
            async for message in messages:
                if isinstance(message, AccountChanged):
                    self._check_soon(message.user_id)


class _Expiries:
    """Revokes each watched socket when its token expires: one task for all of them."""

    def __init__(self) -> None:
        #: (expires at, key): entries of forgotten sockets stay until popped or compacted.
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, Guarded] = {}
        self._keys: dict[Guarded, int] = {}
        self._next_key = itertools.count()
        self._sooner = anyio.Event()

    def add(self, guarded: Guarded) -> None:
        if math.isinf(guarded.expires_at):
            return  # an API key without expiry
        key = next(self._next_key)
        self._watched[key] = guarded
        self._keys[guarded] = key
        heapq.heappush(self._heap, (guarded.expires_at, key))
        if self._heap[0][1] == key:
            self._sooner.set()  # the timer sleeps until a later time: wake it

    def discard(self, guarded: Guarded) -> None:
        key = self._keys.pop(guarded, None)
        if key is not None:
            del self._watched[key]
        if len(self._heap) > 2 * len(self._watched) + 64:  # mostly gone: rebuild
            self._heap = [entry for entry in self._heap if entry[1] in self._watched]
            heapq.heapify(self._heap)

    async def run(self) -> None:
        while True:
            self._sooner = anyio.Event()
            wait = self._heap[0][0] - time.time() if self._heap else None
            with anyio.move_on_after(wait):
                await self._sooner.wait()
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                _, key = heapq.heappop(self._heap)
                guarded = self._watched.pop(key, None)
                if guarded is not None:
                    del self._keys[guarded]
                    guarded.revoke(EXPIRED if guarded.key_id is None else KEY_EXPIRED)


class SocketCounter:
    """Open sockets per user, against ``MAX_SOCKETS_PER_USER`` (one process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[int, int] = {}

    def enter(self, user_id: int) -> bool:
        if self._open.get(user_id, 0) >= self.limit:
            return False
        self._open[user_id] = self._open.get(user_id, 0) + 1
        return True

    def leave(self, user_id: int) -> None:
        self._open[user_id] -= 1
        if not self._open[user_id]:
            del self._open[user_id]
