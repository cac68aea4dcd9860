"""chatsvc: a self-hosted chat backend for streaming LLM replies."""

__version__ = "0.1.0"
