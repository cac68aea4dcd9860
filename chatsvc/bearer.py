"""The bearer secrets chatsvc makes: refresh tokens, API keys and share links.

Each is 256 random bits (``secrets.token_urlsafe(32)``, 43 characters) after a
prefix that says what it is. Only its SHA-256 is stored: a secret with that much
entropy cannot be guessed, so a fast hash is enough, and finding one by its hash
costs one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """The stored form of ``secret``. Any text hashes, even one a client sent with a
    lone surrogate (``surrogatepass``): it is then simply not found."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
