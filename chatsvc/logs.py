"""Logging setup shared by uvicorn and the app, with secrets scrubbed from every line.

uvicorn writes request paths with their query strings (``GET /ws?token=...``),
so a filter on the handler rewrites ``token=`` (and friends) before any line
is written, whoever logged it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec

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


#: Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",  # set on the record by Formatter.format
    "color_message",  # uvicorn's coloured copy of the message
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` (development)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items() if v is not None)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line (production): time, level, logger, message and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def logging_config(level: str = "info", *, json: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for uvicorn, Litestar and chatsvc."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {
            "plain": {
                "()": JsonFormatter if json else TextFormatter,
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
