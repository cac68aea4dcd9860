"""Register, log in and change users of Piccolo's ``BaseUser`` table, hashing off the event loop.

Hashes are Piccolo's own (``Account.hash_password``: BaseUser's, with our
length rules; ``pbkdf2_sha256$600000$salt$hex``), so the same accounts log in
to the Piccolo admin. New hashes take ``PASSWORD_HASH_ROUNDS`` rounds (600,000 by
default and at least in production; a stored hash of fewer is upgraded at its next
login, never lowered). PBKDF2 at 600,000 rounds costs
about 0.2-0.8 s of CPU, so it always runs in a worker thread, at most
``PASSWORD_HASH_WORKERS`` at once: a burst of logins queues there instead of
stalling other requests and streams. At most ``PASSWORD_HASH_QUEUE`` wait
there; beyond, a login is refused at once (``overloaded``, with a
``Retry-After``) rather than wait behind a flood. Logins and registrations
are charged to the :class:`~chatsvc.login_limits.LoginLimits` budgets first,
and failed logins leave an audit line (:mod:`chatsvc.audit`).

Every access token carries its user's token version (``token_version``
table); a password change or a deactivation raises it, which revokes every
token issued before. Whoever changes a user here calls ``on_change``, which
tells every instance to re-check the user's open sockets at once.
"""

from __future__ import annotations

import functools
import hmac
import math
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import anyio
import msgspec

from chatsvc import store
from chatsvc.audit import audit
from chatsvc.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    RateLimited,
    Unauthorized,
)
from chatsvc.login_limits import LoginLimits
from chatsvc.records import UserAccess
from chatsvc.settings import DEFAULT_PASSWORD_HASH_ROUNDS
from chatsvc.tables import MAX_PASSWORD, MIN_PASSWORD, Account
from chatsvc.wire import User

T = TypeVar("T")
#: Where a login came in: the REST API or the Piccolo admin.
Via = Literal["api", "admin"]

INVALID_CREDENTIALS = "invalid username or password"
#: The user columns an operator may change that decide what a token may still do.
ACCESS_COLUMNS = frozenset({"password", "active", "admin", "superuser"})


def _check(password: str, stored: str) -> bool:
    """Piccolo's check (``BaseUser.login`` does the same after its query): hash again with
    the stored salt and rounds, compare in constant time."""
    try:
        algorithm, iterations, salt, _ = Account.split_stored_password(stored)
        again = Account.hash_password(password, salt, int(iterations))
    except ValueError:  # not Piccolo's format, or a password longer than any we store
        return False
    return algorithm == "pbkdf2_sha256" and hmac.compare_digest(again, stored)


def _needs_rehash(stored: str, rounds: int) -> bool:
    """Hashed with fewer rounds than new hashes get (an older default); never lowered."""
    return int(Account.split_stored_password(stored)[1]) < rounds


@functools.cache
def _common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords, lower case, from zxcvbn's frequency lists (MIT).

    zxcvbn's list is drawn from leaked password sets; loading it takes ~0.1 s,
    so the first check does it in a worker thread.
    """
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be used, or ``None``: our length rules and the common list."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return f"a password has {MIN_PASSWORD}-{MAX_PASSWORD} characters"
    if "\x00" in password:
        return "a password may not contain the NUL character"
    if password.lower() in _common_passwords():
        return "this password is one of the most common ones; choose another"
    return None


class ActiveUser(msgspec.Struct, frozen=True):
    id: int
    username: str
    staff: bool
    token_version: int


class Accounts:
    """The account use cases shared by the REST API and the command line."""

    def __init__(
        self,
        *,
        allow_registration: bool,
        hash_workers: int,
        hash_queue: int = 0,
        hash_rounds: int = DEFAULT_PASSWORD_HASH_ROUNDS,
        login_limits: LoginLimits | None = None,
        on_change: Callable[[int], None] = lambda user_id: None,
    ) -> None:
        self.allow_registration = allow_registration
        self.on_change = on_change
        self._workers = hash_workers
        self._limiter = anyio.CapacityLimiter(hash_workers)
        #: Hashes that may wait for a thread; ``0`` (the command line) means any number.
        self._queue = hash_queue
        self._hash_seconds = 0.8  # a first guess for Retry-After, then measured
        self._limits = login_limits
        # Verified when the username is unknown, so that both cases cost the same time.
        self._rounds = hash_rounds
        self._dummy_hash = Account.hash_password(secrets.token_hex(16), iterations=hash_rounds)

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """``work`` in a hashing thread, or :class:`Overloaded` when too many already wait."""
        waiting = self._limiter.statistics().tasks_waiting
        if self._queue and self._limiter.available_tokens < 1 and waiting >= self._queue:
            wait = (waiting + 1) / self._workers * self._hash_seconds
            raise Overloaded(
                "too many password checks are waiting; try again in a moment",
                retry_after=max(1, math.ceil(wait)),
            )

        def timed() -> tuple[T, float]:
            started = time.perf_counter()
            return work(), time.perf_counter() - started

        result, seconds = await anyio.to_thread.run_sync(timed, limiter=self._limiter)
        self._hash_seconds = 0.8 * self._hash_seconds + 0.2 * seconds
        return result

    async def hash_password(self, password: str) -> str:
        return await self._in_thread(
            lambda: Account.hash_password(password, iterations=self._rounds)
        )

    async def _verify(self, password: str, stored: str) -> bool:
        return await self._in_thread(lambda: _check(password, stored))

    def _charge(self, address: str | None, username: str | None, via: Via) -> None:
        if self._limits is None or address is None:
            return
        try:
            self._limits.charge(address, username)
        except RateLimited:
            if username is not None:
                audit(
                    "login_refused",
                    "login refused: too many attempts",
                    username=username,
                    address=address,
                    via=via,
                )
            raise

    async def check_password(self, password: str) -> None:
        """:class:`InvalidInput` when ``password`` breaks the rules (checked off the loop)."""
        problem = await anyio.to_thread.run_sync(password_problem, password)
        if problem is not None:
            raise InvalidInput(problem)

    async def register(self, username: str, password: str, *, address: str | None = None) -> User:
        if not self.allow_registration:
            raise Forbidden("registration is closed on this server")
        self._charge(address, None, "api")
        return await self.create_user(username, password)

    async def create_user(
        self, username: str, password: str, *, staff: bool = False, superuser: bool = False
    ) -> User:
        await self.check_password(password)
        if await store.username_exists(username):
            raise Conflict(f"username {username!r} is already taken")
        password_hash = await self.hash_password(password)
        user_id = await store.create_user(
            username, password_hash, admin=staff or superuser, superuser=superuser
        )
        return User(id=user_id, username=username)

    async def change_user(self, user_id: int, values: dict[str, Any]) -> None:
        """Change a user's columns by name; a new ``password`` is checked and hashed here.

        A new password or a deactivation revokes the user's tokens; a change of
        any column in ``ACCESS_COLUMNS`` re-checks their open sockets everywhere.
        """
        values = dict(values)
        if "password" in values:
            await self.check_password(values["password"])
            values["password"] = await self.hash_password(values["password"])
        revoke = "password" in values or values.get("active") is False
        if not await store.update_user(user_id, values, revoke_tokens=revoke):
            raise NotFound(f"no user {user_id}")
        if ACCESS_COLUMNS.intersection(values):
            self.on_change(user_id)

    async def revoke_tokens(self, user_id: int) -> None:
        """Raise the user's token version: every access token issued before is refused, and
        their open sockets close (4401) everywhere."""
        if not await store.update_user(user_id, {}, revoke_tokens=True):
            raise NotFound(f"no user {user_id}")
        self.on_change(user_id)

    async def change_password(
        self, user: ActiveUser, old: str, new: str, *, address: str | None = None
    ) -> ActiveUser:
        """Set a new password after checking the current one; every token issued before is
        revoked. The user as they are now (their new token version)."""
        self._charge(address, user.username, "api")
        row = await store.get_credentials(user.username)
        if row is None or row.id != user.id or not row.active:
            raise Unauthorized("the user is gone or deactivated")
        if not await self._verify(old, row.password):
            audit(
                "password_change_failed",
                "password change refused: wrong current password",
                username=user.username,
                address=address,
            )
            raise Forbidden("the current password is wrong")
        await self.change_user(user.id, {"password": new})
        changed = await self.active_user(user.id)
        if changed is None:
            raise Unauthorized("the user is gone or deactivated")
        audit("password_changed", "password changed", username=user.username, address=address)
        return changed

    async def authenticate(
        self, username: str, password: str, *, address: str | None = None, via: Via = "api"
    ) -> ActiveUser:
        """The active user, or :class:`Unauthorized` with one message for every failure.

        ``address`` (the client's) is charged to the login budgets and named in the
        audit line of a failure; without one (the command line) nothing is charged.
        """
        self._charge(address, username, via)
        row = await store.get_credentials(username)
        stored = row.password if row else self._dummy_hash
        valid = await self._verify(password, stored)
        if row is None or not valid or not row.active:
            reason = (
                "unknown user" if row is None else "wrong password" if not valid else "inactive"
            )
            audit(
                "login_failed",
                f"login failed: {reason}",
                username=username,
                address=address,
                via=via,
            )
            raise Unauthorized(INVALID_CREDENTIALS)
        rehashed = None
        if _needs_rehash(stored, self._rounds):
            rehashed = await self.hash_password(password)  # upgrade an older iteration count
        await store.record_login(row.id, rehashed)
        return _active_user(row)

    async def active_user(self, user_id: int) -> ActiveUser | None:
        """The user behind a token, or ``None`` once deleted or deactivated."""
        row = await store.get_active_user(user_id)
        return None if row is None else _active_user(row)


def _active_user(user: UserAccess) -> ActiveUser:
    return ActiveUser(
        id=user.id, username=user.username, staff=user.admin, token_version=user.token_version
    )
