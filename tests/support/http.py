"""What every HTTP client of the suite shares.

httpx builds a TLS context for each client it makes (``httpx.Client`` and each call of
``httpx.get`` and the like), loading certifi's certificate bundle: about 30 ms of CPU a
time, which was a third of the suite's CPU (measured with ``py-spy record --subprocesses``
over a run). The servers under test speak plain HTTP on loopback, so one context, made
once, is all any client needs: every client is made with ``verify=tls()``.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def tls() -> ssl.SSLContext:
    return ssl.create_default_context()
