"""Audit lines: who did what, from where, on the ``chatsvc.audit`` logger.

Failed logins, admin logins and changes made through the admin
(docs/operations.md, "Logs"; the generation lines come from
:mod:`chatsvc.telemetry`). A line names a user and an address and never a
password, a token or a field's value; values a client chose (a username) are quoted
when they hold anything but plain characters, so they cannot forge a line.
"""

from __future__ import annotations

import logging
import re

import msgspec

log = logging.getLogger("chatsvc.audit")

_PLAIN = re.compile(r"[\w.,@:/+-]*")


def _quoted(value: object) -> object:
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        return msgspec.json.encode(value).decode()
    return value


def audit(event: str, message: str, **fields: object) -> None:
    """One audit line: ``message``, then ``event=`` and the fields (``None`` ones left out)."""
    extra = {k: _quoted(v) for k, v in fields.items() if v is not None}
    log.info("%s", message, extra={"event": event, **extra})
