"""API keys for services (issue 16, point 2): made, listed and revoked by their user.

A key is ``csk_`` and 43 characters of ``secrets.token_urlsafe(32)`` (256 random
bits). It is shown once, when made; the database keeps its SHA-256 (a key has
far too much entropy to guess, so a fast hash is enough, and a lookup by hash
costs one indexed query) and its first characters (``prefix``), to recognise it
by in lists. A key acts as its user on every route and on ``/ws``, until it
expires or is revoked, or its user is deactivated; a password change leaves
keys alone (they are revoked one by one). Revoking tells every instance to
re-check the user's open sockets at once (``on_change``, as for an account
change), and those opened with the key close with 4401.

``last_used_at`` is written at most once a minute per key: a use is noted only
when the stored one is older (the lookup reads it anyway), and the write itself
is conditional, so instances and bursts do not multiply it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from chatsvc import key_store
from chatsvc.audit import audit
from chatsvc.bearer import new_secret, secret_hash
from chatsvc.errors import InvalidInput, NotFound
from chatsvc.records import ApiKeyRecord, KeyHolder
from chatsvc.wire import ApiKey, ApiKeyCreate, ApiKeyList, NewApiKey

log = logging.getLogger("chatsvc.keys")

#: What every key starts with: tells a key from a login token at a glance (and in code).
KEY_PREFIX = "csk_"
#: Characters of the key shown in lists: the prefix and 8 of the secret (48 bits of 256).
SHOWN = len(KEY_PREFIX) + 8
#: Unrevoked keys a user may keep (docs/protocol.md section 1).
MAX_KEYS_PER_USER = 100
#: ``last_used_at`` is precise to this much.
USE_NOTED_EVERY = timedelta(minutes=1)


def is_key(bearer: str) -> bool:
    return bearer.startswith(KEY_PREFIX)


class ApiKeys:
    """The key use cases of the REST API, the token auth and the admin."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        on_change: Callable[[int], None] = lambda user_id: None,
    ) -> None:
        self._clock = clock
        self.on_change = on_change

    async def create(self, owner: int, request: ApiKeyCreate) -> NewApiKey:
        now = self._clock()
        expires_at = _expiry(request, now)
        key = new_secret(KEY_PREFIX)
        record = await key_store.create_key(
            owner,
            name=request.name,
            prefix=key[:SHOWN],
            key_hash=secret_hash(key),
            created_at=now,
            expires_at=expires_at,
            max_keys=MAX_KEYS_PER_USER,
        )
        audit(
            "api_key_created",
            "API key created",
            user_id=owner,
            key_id=str(record.id),
            prefix=record.prefix,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
        return NewApiKey(**msgspec.structs.asdict(_wire(record)), key=key)

    async def list(self, owner: int) -> ApiKeyList:
        return ApiKeyList(items=[_wire(record) for record in await key_store.list_keys(owner)])

    async def revoke(self, key_id: UUID, *, owner: int | None, by: str) -> None:
        """Revoke the key (``owner``'s own, or any with ``None``: the admin); :class:`NotFound`
        when there is none, another user's, or revoked already. Its sockets close at once."""
        user_id = await key_store.revoke_key(key_id, self._clock(), owner=owner)
        if user_id is None:
            raise NotFound(f"no API key {key_id}")
        audit("api_key_revoked", "API key revoked", user_id=user_id, key_id=str(key_id), by=by)
        self.on_change(user_id)

    async def change(self, key_id: UUID, changes: dict[str, Any], *, by: str) -> None:
        """The admin's edit of a key: ``name``, ``expires_at``, ``revoked_at`` (a revoked key
        stays revoked). A new expiry or a revocation re-checks the owner's sockets."""
        changed = await key_store.change_key(key_id, changes)
        if changed is None:
            raise NotFound(f"no API key {key_id}")
        user_id, revoked_before = changed
        if revoked_before is None and changes.get("revoked_at") is not None:
            audit("api_key_revoked", "API key revoked", user_id=user_id, key_id=str(key_id), by=by)
        if "expires_at" in changes or "revoked_at" in changes:
            self.on_change(user_id)

    async def holder(self, key: str) -> KeyHolder | None:
        """The key's holder when the key is valid now (known, unexpired, unrevoked, its user
        active); notes the use at most once a minute."""
        found = await key_store.holder(secret_hash(key))
        now = self._clock()
        if (
            found is None
            or found.revoked_at is not None
            or (found.expires_at is not None and found.expires_at <= now)
            or not found.active
        ):
            return None
        since = now - USE_NOTED_EVERY
        if found.last_used_at is None or found.last_used_at < since:
            try:
                await key_store.mark_used(found.key_id, now, unless_since=since)
            except Exception as exc:  # a note for people: the request goes on without it
                log.warning(
                    "could not note the use of API key %s: %s: %s",
                    found.key_id,
                    type(exc).__name__,
                    exc,
                )
        return found


def _expiry(request: ApiKeyCreate, now: datetime) -> datetime | None:
    if request.expires_at is not None and request.expires_in is not None:
        raise InvalidInput("give expires_at or expires_in, not both")
    if request.expires_in is not None:
        return now + timedelta(seconds=request.expires_in)
    if request.expires_at is not None and request.expires_at <= now:
        raise InvalidInput("expires_at: must be in the future")
    return request.expires_at


def _wire(record: ApiKeyRecord) -> ApiKey:
    return ApiKey(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        expires_at=record.expires_at,
    )
