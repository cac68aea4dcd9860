"""Generations: the assistant replies streaming from the LLM, and how each ends.

Read ``registry`` (start, follow, abort, stop), then ``runner`` (how a reply ends),
then ``conversation`` (what it says); docs/architecture.md, "The life of a reply".
"""

from chatsvc.generation.registry import Generations, NewChat
from chatsvc.generation.reply import Aborting, Ending, Generation, Status

__all__ = ["Aborting", "Ending", "Generation", "Generations", "NewChat", "Status"]
