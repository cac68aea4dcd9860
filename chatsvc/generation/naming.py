"""Naming a chat after its first reply (issue 15): one short request, off the reply's path.

The registry starts ``Naming.name`` in its task group once a reply is stored
``complete`` and its ``done`` is out, for a chat whose title is a placeholder (its
first message's first words). The chat is claimed first (``title_source``
``placeholder`` -> ``model``: one title per chat, across instances), then the model
is asked, its answer cleaned, stored (unless the user renamed the chat meanwhile) and
announced as ``chat_updated`` to every socket of the chat's owner. A failure is logged
and nothing more: the chat keeps its placeholder and is never asked for again.
"""

from __future__ import annotations

import logging

from chatsvc import store, titles
from chatsvc.errors import ChatsvcError
from chatsvc.events import ChatEvents, event_of
from chatsvc.generation.reply import Generation
from chatsvc.mappers import chat_from_record
from chatsvc.providers import LLMProvider
from chatsvc.wire import ChatUpdated

log = logging.getLogger("chatsvc.titles")

#: Messages read back to find the question the first reply answered.
_RECENT = 4


class Naming:
    """Asks the model to name chats, and tells every socket of the chat's owner."""

    def __init__(self, provider: LLMProvider, events: ChatEvents) -> None:
        self._provider = provider
        self._events = events

    async def name(self, generation: Generation) -> None:
        """Name the chat of this completed reply; the task's one error boundary."""
        chat_id = generation.chat_id
        try:
            if not await store.claim_title(chat_id):
                return  # titled by its user, or named already
            answer = await self._provider.title(
                generation.model, await self._question(generation), generation.content
            )
            title = titles.clean(answer)
            if title is None:
                log.info("chat %s: the model gave no title; it keeps its first words", chat_id)
                return
            chat = await store.set_model_title(chat_id, title)
        except ChatsvcError as exc:
            log.warning("chat %s: could not name it (%s); it keeps its first words", chat_id, exc)
            return
        except Exception:  # this task's error boundary: a title is never worth more
            log.exception("chat %s: naming it failed", chat_id)
            return
        if chat is not None:  # else renamed by its user meanwhile, or the same title
            frame = ChatUpdated(chat=chat_from_record(chat))
            self._events.publish_to_owner(generation.owner, chat_id, event_of(frame))

    @staticmethod
    async def _question(generation: Generation) -> str:
        """The user's message the reply answered: the newest before it."""
        recent = await store.list_messages(generation.chat_id, limit=_RECENT)
        before = [m for m in recent if m.id != generation.message_id and m.role == "user"]
        return before[-1].content if before else ""
