"""Generations: the assistant replies streaming from the LLM, and how each ends.

Read ``launch`` (how a reply starts), then ``runner`` (how it ends), then
``conversation`` (what it says), and ``registry`` (the task group they run in, and
follow, abort, stop); docs/architecture.md, "The life of a reply".
"""

from chatsvc.generation.launch import Launcher, NewChat
from chatsvc.generation.registry import Generations
from chatsvc.generation.reply import Aborting, Ending, Generation, Status

__all__ = ["Aborting", "Ending", "Generation", "Generations", "Launcher", "NewChat", "Status"]
