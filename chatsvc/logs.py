"""Logging setup shared by uvicorn and the app, with secrets scrubbed from every line.

uvicorn writes request paths with their query strings (``GET /ws?token=...``),
so a filter on the handler rewrites ``token=`` (and friends, in any
percent-encoded spelling) and anything shaped like a JWT, an API key or a share
link token (``GET /share/shr_...``) before
any line is written, whoever logged it.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

import msgspec

_SECRET_NAMES = r"(?:token|access_token|api_key|password)"
#: ``&password=...`` outside a query string (a form body quoted in a message).
_SECRET_PARAMS = re.compile(rf"(?P<key>[?&]{_SECRET_NAMES}=)[^&\s\"']*", re.IGNORECASE)
#: A query string as uvicorn logs it: raw, still percent-encoded.
_QUERY = re.compile(r"\?(?P<query>[^\s\"'#]+)")
#: A secret's name at the start of a decoded pair, or after a separator decoded out of it.
_SECRET_PAIR = re.compile(rf"(?:^|[&;?])\s*{_SECRET_NAMES}\s*=", re.IGNORECASE)
#: A JWT (header.payload.signature, base64url; the header always starts ``{"``).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: A whole API key (``csk_`` and 43 characters); a key's shown prefix (8 after ``csk_``) stays.
_API_KEY = re.compile(r"csk_[A-Za-z0-9_-]{16,}")
#: A whole share link token (``shr_`` and 43 characters; issue 17), in a path or anywhere.
_SHARE_TOKEN = re.compile(r"shr_[A-Za-z0-9_-]{16,}")
REDACTED = "[redacted]"


def _decoded(text: str) -> str:
    """Percent- and ``+``-decoded until stable (a few rounds: ``%2574`` is ``%74`` is ``t``)."""
    for _ in range(4):
        decoded = unquote_plus(text)
        if decoded == text:
            break
        text = decoded
    return text


def _redact_pair(pair: str) -> str:
    if not _SECRET_PAIR.search(_decoded(pair)):
        return pair
    name, equals, _ = pair.partition("=")
    return f"{name}={REDACTED}" if equals and not _SECRET_PAIR.search(_decoded(name)) else REDACTED


def _redact_query(match: re.Match[str]) -> str:
    pairs = re.split(r"([&;])", match["query"])
    return "?" + "".join(p if p in "&;" else _redact_pair(p) for p in pairs)


def redact(text: str) -> str:
    """``/ws?token=abc&x=1`` -> ``/ws?token=[redacted]&x=1``, whatever the spelling.

    Names are compared after percent-decoding (``?%74oken=``, ``?token%3D...``):
    the server refuses those spellings, but uvicorn logs the request line first.
    """
    text = _QUERY.sub(_redact_query, text)
    text = _SECRET_PARAMS.sub(rf"\g<key>{REDACTED}", text)
    text = _SHARE_TOKEN.sub(REDACTED, text)
    return _API_KEY.sub(REDACTED, _JWT.sub(REDACTED, text))


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
    # Chatty libraries (below): their lines at DEBUG, only their warnings at INFO.
    libraries_level = level if level == "DEBUG" else max(level, "WARNING", key=logging.getLevelName)
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
            **{
                name: {"level": level, "handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "chatsvc")
            },
            # The HTTP clients log every request at INFO: one line per reply, beside the
            # audit's own `generation started`; Piccolo logs its engine's version at INFO,
            # SQLite's 3.40 as "3.4".
            **{
                name: {"level": libraries_level}
                for name in ("httpx", "httpx2", "httpcore", "piccolo")
            },
        },
    }
