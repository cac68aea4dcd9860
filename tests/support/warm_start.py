"""``chatsvc serve`` forked from a warm interpreter: each test worker imports chatsvc once.

A ``python -m chatsvc serve`` process spends about 1.3 s of CPU importing chatsvc and its
libraries (the openai SDK alone about half of it) before it serves, and the suite starts
more than a hundred servers: a fifth of the whole run's CPU. Each test worker therefore
keeps one multiprocessing forkserver that has imported them once, and a test server is a
fork of it running the same entry point, ``chatsvc.cli.main(["serve", ...])``: a process
of its own, with its own environment (set whole, as ``subprocess`` would), working
directory, log file and exit code, signalled and stopped like any other. What a fork
cannot show, the interpreter's own start, is left to the tests of the command line, which
run ``python -m chatsvc`` (``start_server(..., fresh_interpreter=True)``, ``run_chatsvc``).

Coverage follows the forks (``patch = ["subprocess", "fork", "_exit"]`` in pyproject.toml).
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path

#: What ``chatsvc serve`` imports on its way to serving, imported once by the forkserver.
#: Nothing here starts a thread (a fork copies only the thread that forks).
PRELOAD = (
    "chatsvc.cli",
    "chatsvc.app",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "piccolo.engine.sqlite",
    "piccolo.engine.postgres",
    # Imported on the way, found by sampling a fork's start (py-spy):
    "anyio._backends._asyncio",
    "piccolo.apps.migrations.commands.forwards",
    "openai.resources.models",
    "httpcore2",
    "h2.connection",
    "truststore",
    "litestar._kwargs",
    __name__,  # where each fork finds ``_run``
)


@functools.cache
def _forkserver() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def _run(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
    """In the fork: become the process ``subprocess.Popen`` would have started, then run."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # What the forkserver imported is start-up heap: chatsvc freezes its own at start
    # (``gc.freeze``) after a full collection, which then walks only what the fork made.
    gc.freeze()
    from chatsvc.cli import main

    main(argv)


class WarmProcess:
    """A forked server, with the part of ``subprocess.Popen``'s interface the tests use."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None  # started
        return pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"chatsvc (pid {self.pid})", timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> WarmProcess:
    """``chatsvc ARGV`` in a fork of the worker's warm forkserver; its output goes to
    ``log_path``, made empty here (so a reader finds the file from the first moment)."""
    log_path.write_bytes(b"")
    process = _forkserver().Process(
        target=_run, args=(list(argv), dict(env), cwd, log_path), daemon=True
    )
    process.start()
    return WarmProcess(process)
