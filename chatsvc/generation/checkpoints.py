"""The loop that saves the text (and reasoning) of every running reply every
``CHECKPOINT_SECONDS``."""

from __future__ import annotations

import logging
from uuid import UUID

import anyio

from chatsvc import store
from chatsvc.errors import Overloaded
from chatsvc.generation.reply import Generation, Running

log = logging.getLogger("chatsvc.generation")


async def save_partial_replies(running: Running, seconds: float) -> None:
    """Every ``seconds``, save the text of every running reply in one write, until cancelled.

    One transaction for all replies, rather than one per reply, keeps the
    (single-writer) SQLite lock and the PostgreSQL pool free for the writes
    that clients wait for. A crash loses at most this interval of text.
    """
    saved: dict[UUID, tuple[int, int]] = {}
    while True:
        await anyio.sleep(seconds)
        replies = list(running)
        changed = [g for g in replies if saved.get(g.task_id) != _said(g)]
        saved = {g.task_id: _said(g) for g in replies}
        if not changed:
            continue
        try:
            await store.checkpoint_replies(
                [(g.message_id, g.content, g.reasoning) for g in changed]
            )
        except Exception as exc:  # this task's error boundary: the replies themselves go on
            for generation in changed:  # the next checkpoint saves them
                saved.pop(generation.task_id, None)
            if isinstance(exc, Overloaded):
                log.warning("could not save the text of %d replies: %s", len(changed), exc)
            else:
                log.exception("could not save the partial text of %d replies", len(changed))


def _said(generation: Generation) -> tuple[int, int]:
    """How much the reply has said: its text parts and reasoning parts."""
    return len(generation.parts), len(generation.thoughts)
