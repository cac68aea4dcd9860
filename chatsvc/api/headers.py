"""Headers every HTTP response carries: no framing, no type sniffing, a referrer policy.

Added by a ``before_send`` hook, which sees every message the app sends: routed
answers, Litestar's own errors (404, 405, 500), static files and the Piccolo admin
mounted at ``/admin``. A page with a Content-Security-Policy of its own (the web
client, the API docs) keeps it; one without ``frame-ancestors`` gets it added.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

FRAME_ANCESTORS = "frame-ancestors 'none'"

#: ``same-origin``: a full referrer within this origin (Piccolo admin's CSRF check reads
#: ``Origin``/``Referer`` over HTTPS), none at all to another origin.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def add_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    message.setdefault("headers", [])
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
    if "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = FRAME_ANCESTORS
    elif "frame-ancestors" not in (policy := headers["Content-Security-Policy"]):
        headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; {FRAME_ANCESTORS}"
