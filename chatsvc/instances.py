"""This process as one of several chatsvc instances sharing a database.

Each instance holds a lease (a row in ``instance``) that it renews every
third of ``INSTANCE_LEASE_SECONDS`` and drops when it stops. A reply records
the instance streaming it. Whichever instance sees that a lease ran out (its
holder crashed, or lost the database) marks that instance's ``streaming``
replies ``interrupted``; it never touches the replies of a live instance.

An instance without a shared event bus is the only one by definition (others
could neither abort its replies nor follow them): when it starts, every other
instance is gone, so a crash's replies are interrupted at once, not once the
crashed lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import anyio

from chatsvc import store
from chatsvc.records import InterruptedReply

log = logging.getLogger("chatsvc.instances")

Recovered = Callable[[list[InterruptedReply]], Awaitable[None]]


class Lease:
    def __init__(self, instance: str, seconds: float) -> None:
        self.id = instance
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.seconds = seconds

    def live_after(self) -> datetime:
        """Leases renewed after this moment are live."""
        return store.now() - timedelta(seconds=self.seconds)

    async def take(self) -> None:
        await store.register_instance(self.id, self.host)

    async def drop(self) -> None:
        await store.end_lease(self.id)

    async def recover(self, recovered: Recovered, *, alone: bool = False) -> None:
        """Interrupt the replies of instances that are gone: every other one if ``alone``."""
        replies = await store.interrupt_orphaned_replies(
            self.live_after(), sole=self.id if alone else None
        )
        if replies:
            log.warning(
                "%d replies of stopped or crashed instances are now interrupted", len(replies)
            )
            await recovered(replies)

    async def keep(self, recovered: Recovered) -> None:
        """Renew the lease and look for orphaned replies, until cancelled."""
        while True:
            await anyio.sleep(self.seconds / 3)
            try:
                if not await store.renew_lease(self.id, self.host):
                    log.error(
                        "this instance's lease had run out (database unreachable for over %g s);"
                        " its replies may have been marked interrupted by another instance",
                        self.seconds,
                    )
                await self.recover(recovered)
            except Exception as exc:  # this loop's error boundary: try again next round
                log.error("could not renew the instance lease: %s: %s", type(exc).__name__, exc)
