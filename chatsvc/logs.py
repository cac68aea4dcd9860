"""Logging setup shared by uvicorn and the app, with secrets scrubbed from every line.

uvicorn writes request paths with their query strings (``GET /ws?token=...``),
so a filter on the handler rewrites ``token=`` (and friends) before any line
is written, whoever logged it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_SECRET_PARAMS = re.compile(
    r"(?P<key>[?&](?:token|access_token|api_key|password)=)[^&\s\"']*", re.IGNORECASE
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``/ws?token=abc&x=1`` -> ``/ws?token=[redacted]&x=1``."""
    return _SECRET_PARAMS.sub(rf"\g<key>{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Formats the message once and scrubs secret query parameters from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for uvicorn, Litestar and chatsvc."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {
            "plain": {
                "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                "datefmt": "%Y-%m-%d %H:%M:%S",
            }
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "chatsvc")
        },
    }
