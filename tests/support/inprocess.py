"""The in-process tier: an app built by ``create_app`` served by a real uvicorn in a thread.

For what needs no process of its own (start, stop, crash and multi-instance tests keep
subprocess servers): no interpreter start, no import of the app per server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import uvicorn

START_SECONDS = 60


@contextmanager
def serving(app: Any) -> Generator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:  # uvicorn sets a flag, nothing to wait on
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the app did not start (see the log above)")
        time.sleep(0.02)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_SECONDS)
