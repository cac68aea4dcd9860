"""Register and log in users of Piccolo's ``BaseUser`` table, hashing off the event loop.

Hashes use BaseUser's own format (``pbkdf2_sha256$600000$salt$hex``), so the
same accounts log in to the Piccolo admin. PBKDF2 at 600,000 rounds costs
about 0.5-0.8 s of CPU, so it always runs in a worker thread, at most
``PASSWORD_HASH_WORKERS`` at once: a burst of logins queues there instead of
stalling other requests and streams.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import anyio
import msgspec
from piccolo.apps.user.tables import BaseUser

from chatsvc import store
from chatsvc.errors import Conflict, Forbidden, Unauthorized
from chatsvc.wire import User

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

    def __init__(self, *, allow_registration: bool, hash_workers: int) -> None:
        self.allow_registration = allow_registration
        self._limiter = anyio.CapacityLimiter(hash_workers)
        # Verified when the username is unknown, so that both cases cost the same time.
        self._dummy_hash = _pbkdf2(secrets.token_hex(16), secrets.token_hex(16), ITERATIONS)

    async def hash_password(self, password: str) -> str:
        salt = secrets.token_hex(16)
        return await anyio.to_thread.run_sync(
            _pbkdf2, password, salt, ITERATIONS, limiter=self._limiter
        )

    async def _verify(self, password: str, stored: str) -> bool:
        return await anyio.to_thread.run_sync(_check, password, stored, limiter=self._limiter)

    async def register(self, username: str, password: str) -> User:
        if not self.allow_registration:
            raise Forbidden("registration is closed on this server")
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

    async def authenticate(self, username: str, password: str) -> int:
        """The user's id, or :class:`Unauthorized` with one message for every failure."""
        row = await store.get_credentials(username)
        stored = row["password"] if row else self._dummy_hash
        valid = await self._verify(password, stored)
        if row is None or not valid or not row["active"]:
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
