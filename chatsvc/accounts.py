"""Register and log in users of Piccolo's ``BaseUser`` table, hashing off the event loop.

Hashes use BaseUser's own format (``pbkdf2_sha256$600000$salt$hex``), so the
same accounts log in to the Piccolo admin. PBKDF2 at 600,000 rounds costs
about 0.5-0.8 s of CPU, so it always runs in a worker thread, at most
``PASSWORD_HASH_WORKERS`` at once: a burst of logins queues there instead of
stalling other requests and streams. At most ``PASSWORD_HASH_QUEUE`` wait
there; beyond, a login is refused at once (``overloaded``, with a
``Retry-After``) rather than wait behind a flood. Logins and registrations
are charged to the :class:`~chatsvc.login_limits.LoginLimits` budgets first,
and failed logins leave an audit line (:mod:`chatsvc.audit`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import anyio
import msgspec
from piccolo.apps.user.tables import BaseUser

from chatsvc import store
from chatsvc.audit import audit
from chatsvc.errors import Conflict, Forbidden, Overloaded, RateLimited, Unauthorized
from chatsvc.login_limits import LoginLimits
from chatsvc.wire import User

T = TypeVar("T")
#: Where a login came in: the REST API or the Piccolo admin.
Via = Literal["api", "admin"]

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = BaseUser._pbkdf2_iteration_count
INVALID_CREDENTIALS = "invalid username or password"


def _pbkdf2(password: str, salt: str, iterations: int) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"{ALGORITHM}${iterations}${salt}${digest}"


def _check(password: str, stored: str) -> bool:
    algorithm, _, rest = stored.partition("$")
    iterations, _, rest = rest.partition("$")
    salt, _, _ = rest.partition("$")
    if algorithm != ALGORITHM or not iterations.isdigit():
        return False
    return hmac.compare_digest(_pbkdf2(password, salt, int(iterations)), stored)


class ActiveUser(msgspec.Struct, frozen=True):
    id: int
    username: str
    staff: bool


class Accounts:
    """The account use cases shared by the REST API and the command line."""

    def __init__(
        self,
        *,
        allow_registration: bool,
        hash_workers: int,
        hash_queue: int = 0,
        login_limits: LoginLimits | None = None,
    ) -> None:
        self.allow_registration = allow_registration
        self._workers = hash_workers
        self._limiter = anyio.CapacityLimiter(hash_workers)
        #: Hashes that may wait for a thread; ``0`` (the command line) means any number.
        self._queue = hash_queue
        self._hash_seconds = 0.8  # a first guess for Retry-After, then measured
        self._limits = login_limits
        # Verified when the username is unknown, so that both cases cost the same time.
        self._dummy_hash = _pbkdf2(secrets.token_hex(16), secrets.token_hex(16), ITERATIONS)

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
        salt = secrets.token_hex(16)
        return await self._in_thread(lambda: _pbkdf2(password, salt, ITERATIONS))

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

    async def register(self, username: str, password: str, *, address: str | None = None) -> User:
        if not self.allow_registration:
            raise Forbidden("registration is closed on this server")
        self._charge(address, None, "api")
        return await self.create_user(username, password)

    async def create_user(
        self, username: str, password: str, *, staff: bool = False, superuser: bool = False
    ) -> User:
        if await store.username_exists(username):
            raise Conflict(f"username {username!r} is already taken")
        password_hash = await self.hash_password(password)
        user_id = await store.create_user(
            username, password_hash, admin=staff or superuser, superuser=superuser
        )
        return User(id=user_id, username=username)

    async def authenticate(
        self, username: str, password: str, *, address: str | None = None, via: Via = "api"
    ) -> int:
        """The user's id, or :class:`Unauthorized` with one message for every failure.

        ``address`` (the client's) is charged to the login budgets and named in the
        audit line of a failure; without one (the command line) nothing is charged.
        """
        self._charge(address, username, via)
        row = await store.get_credentials(username)
        stored = row["password"] if row else self._dummy_hash
        valid = await self._verify(password, stored)
        if row is None or not valid or not row["active"]:
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
        if not stored.startswith(f"{ALGORITHM}${ITERATIONS}$"):
            rehashed = await self.hash_password(password)  # upgrade an older iteration count
        await store.record_login(row["id"], rehashed)
        return row["id"]

    async def active_user(self, user_id: int) -> ActiveUser | None:
        """The user behind a token, or ``None`` once deleted or deactivated."""
        row = await store.get_active_user(user_id)
        if row is None:
            return None
        return ActiveUser(id=row["id"], username=row["username"], staff=row["admin"])
