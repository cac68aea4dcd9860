"""Task groups for background work that lives exactly as long as its owner."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import anyio.abc


@asynccontextmanager
async def background_tasks() -> AsyncGenerator[anyio.abc.TaskGroup]:
    """A task group whose tasks are cancelled when the body ends (a plain task group
    would wait for them): the loops and readers a service runs while it is entered."""
    async with anyio.create_task_group() as task_group:
        try:
            yield task_group
        finally:
            task_group.cancel_scope.cancel()
