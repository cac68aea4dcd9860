"""Waiting for something to happen, instead of sleeping for a time it usually takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is checked: small next to what the tests wait for.
POLL_SECONDS = 0.02


def wait_until(check: Callable[[], T | None], *, timeout: float = 10, what: str) -> T:
    """The first truthy result of ``check``; fails the test after ``timeout`` seconds.

    For what a test can only observe by looking (a row a server writes, a state its
    health check reports); frames and process exits are waited on directly.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}; last seen: {result!r}")
        time.sleep(POLL_SECONDS)
