"""Load benchmark of the generation relay: many WebSocket clients streaming replies at once.

Run (SQLite, a fake OpenAI-compatible upstream; each run takes well under a minute)::

    uv run python tests/bench/stream_load.py --clients 200 --rate 10 --tokens 50
    uv run python tests/bench/stream_load.py --clients 20 --rate 0 --tokens 50000 \
        --abort-every 1 --abort-after 1000

It starts a real ``chatsvc serve`` (as the tests do) whose upstream is
``tests/fake_openai.py``, run in a child process of its own (so that it does not
share this process's GIL with the clients), registers ``--users`` users and
opens ``--clients`` WebSockets, started evenly over ``--ramp`` seconds. Each
client sends a message (a new chat), reads the reply up to its terminal frame
and sends the next one, until ``--duration`` seconds after the ramp; then it
finishes the reply in flight. Every ``--abort-every``-th client aborts each of
its replies by task id after ``--abort-after`` tokens. Each token the fake
sends carries its send time (``t<i>@<unix time>``); the clients note their own
``time.time()`` on receipt (same machine, same clock).

Figures are taken in the window from the end of the ramp to the end of
``--duration`` (each sample by when it happened), unless said otherwise:

- tokens/s: upstream tokens received by the clients in the window, per second
  (offered: clients x rate, less the gaps between replies).
- relay: per token, client receipt minus the upstream's send time.
- send -> started: ``send_message`` sent -> ``started`` received (the exchange
  is stored and the reply launched), for messages sent in the window.
- TTFT: ``send_message`` sent -> first ``token`` frame, for messages sent in the
  window. It includes the upstream's own wait before its first token (1/rate
  with the fake). TTFT net subtracts that wait (first token's send time minus
  when the request reached the fake): what is left is the server's share
  (storing the exchange, reading the history, opening the upstream request)
  plus the first token's relay. The TTFT target is checked against TTFT net.
- abort -> aborted: ``abort`` sent -> ``aborted`` received, for aborts sent in
  the window.
- upstream closed, over the whole run: the share of answered aborts whose
  upstream request the fake saw hang up before it had sent every token
  (waiting up to 1 s), and the time from the abort to that hang-up.
- errors (other than deliberate refusals), over the whole run: ``error`` frames,
  also those that did not end a reply (e.g. an ``internal`` answer to an
  ``abort``), replies lost (10 s without a frame, 30 s in burst mode: that
  client then stops), ``done`` replies with fewer tokens than sent, and clients
  that failed (connect, closed 1013 "too slow", ...). Not errors, shown apart:
  aborts answered by ``done`` (the reply finished first) and the ``not_running``
  that may answer them ("late abort"); deliberate refusals of a send
  (``overloaded``, ``rate_limited``, ``busy``): such a reply ends ``refused``.
- error frames by code: every ``error`` frame the senders' sockets got
  (followers' apart), by ``code``; refusals and late-abort answers are marked.
- refused sends: refusal frames, replies refused at least once, resends (burst
  mode) and replies given up after ``MAX_RESENDS`` (5) resends.
- replies left streaming: once the clients are done (before the server stops),
  the ``message`` rows still ``status = 'streaming'``, counted again every
  0.25 s for up to 5 s while any are left; what is left then is the figure
  (the count when the clients ended is shown too, with every reply's status).
- server CPU / 1k tokens: utime+stime of the server process (all its threads),
  from ``/proc/<pid>/stat``, over the window, per 1,000 tokens delivered in
  the window; also as a share of one core.
- load generator CPU: this process (the clients) and the fake's, as shares of
  one core: near 100% means the generator, not the server, limits the figures.
- SDK ceiling (``--no-ceiling`` skips it): the same load without the server,
  read straight from the fake by ``openai.AsyncOpenAI`` streams in this
  process (an abort is leaving the stream after ``--abort-after`` tokens):
  tokens/s, latency from the upstream's send to the SDK yielding the chunk,
  and this client's CPU per 1,000 tokens.

Burst mode (issue 11), and the runs it records (each well under a minute)::

    uv run python tests/bench/stream_load.py --burst --clients 200 --users 20 --messages 3 \
        --rate 10 --tokens 50 --abort-share 0.3 --no-ceiling
    uv run python tests/bench/stream_load.py --burst --clients 200 --users 20 --messages 3 \
        --rate 10 --tokens 50 --abort-share 0.3 --no-ceiling --db postgres
    uv run python tests/bench/stream_load.py --burst --clients 200 --users 20 --messages 3 \
        --rate 0 --tokens 200 --abort-share 0.3 --no-ceiling
    uv run python tests/bench/stream_load.py --burst --clients 200 --users 20 --messages 3 \
        --rate 0 --tokens 200 --abort-share 0.3 --no-ceiling --db postgres

- ``--burst``: every client connects and reads ``ready`` first; once the last
  one has (or has failed to), one instant 0.5 s later is set for all, and every
  client sends its first ``send_message`` then. Each sends ``--messages``
  (default 3) messages one after another in one chat: the first creates it, the
  next ones pass its ``chat_id``, each once the previous reply has reached its
  terminal frame (after an ``error`` too; a lost reply stops the client). The
  window is the whole run, from just before the burst instant until every
  client is done: ``--ramp`` and ``--duration`` are not used. Client ``i`` is
  user ``i % users`` as in the other modes (with ``--instances 1``).
- Refused sends: a send answered ``overloaded`` or ``rate_limited`` (before
  ``started``) is sent again, the same frame, after the error's ``retry_after``
  seconds (1 s without one), up to 5 times; ``busy`` is counted, not resent.
  The reply's TTFT and send -> started count from the send that was taken; for
  replies refused at least once, TTFT from the first send is shown apart.
- ``--abort-share S`` (burst mode; instead of ``--abort-every``): a share S of
  all the replies is aborted after ``--abort-after`` tokens, exactly
  (``floor(n x S)`` of the first ``n``, in the order client 0's messages, then
  client 1's...), so aborted replies are spread over the clients and over the
  messages of each chat. Without it, ``--abort-every`` works as in the other
  modes (every Nth client aborts each of its replies).
- ``MAX_CONCURRENT_GENERATIONS`` is one more than a user's clients
  (``ceil(clients / users) + 1``), so that the per-user cap does not refuse;
  ``--user-cap N`` sets it (also in the other modes, where it is 1000).
- Targets (issue 11; benchmark figures, not test assertions), met or not:
  relay p99 < 5 ms, TTFT net p99 < 300 ms, abort -> aborted p99 < 20 ms, 0
  errors other than deliberate refusals, 0 replies left streaming, server CPU
  < 0.1 s per 1,000 tokens (the issue's is at 200 x 10 tokens/s on PostgreSQL),
  and, flat out (``--rate 0``) only, aborts landing >= 99%: answered by
  ``aborted`` rather than ``done``, among the aborts sent. For the aborts
  answered by ``done``, "late: first token -> done" is how long such a reply
  took to reach its client whole: an abort's round trip longer than that
  cannot land.
- ``--slow-readers`` needs a timed window: not with ``--burst``. Followers work.

Idle sockets (a mode of its own; about a minute)::

    uv run python tests/bench/stream_load.py --idle-sockets 5000 --users 20

It starts one server (``--db``; no upstream is called), registers ``--users``
users, raises this process's ``RLIMIT_NOFILE`` to its hard limit (the server
inherits it) and sets ``MAX_SOCKETS_PER_USER`` to ``ceil(N / users) + 1`` (at
most 10,000: use enough users). A first socket per user is opened and closed
(warm-up); then the server's ``VmRSS`` (``/proc/<pid>/status``) is read once it
has held within 1 MB for 3 s, ``--idle-sockets`` authenticated WebSockets are
opened (spread over the users, 200 at a time, each reading its ``ready``), the
RSS is read again the same way, and the sockets are closed. Figures: MB added
(target: 5,000 sockets add less than 150 MB), KB per socket, and the server's
own count of open sockets (``chatsvc_websockets_open``).

``--json`` prints every figure as JSON instead of the table. ``--profile FILE``
runs the server (instance A) under cProfile (main-thread CPU time; inspect with
``pstats``), ``--db postgres`` uses a fresh PostgreSQL database
(``CHATSVC_TEST_POSTGRES_URL``).

Several instances and slow readers::

    uv run python tests/bench/stream_load.py --db postgres --instances 2 --bus redis \
        --clients 100 --duration 15 --no-ceiling
    uv run python tests/bench/stream_load.py --db postgres --instances 2 --bus postgres \
        --clients 100 --duration 45 --users 1 --slow-readers 8 --no-ceiling

- ``--instances 2`` starts two servers, A and B, on the same database (PostgreSQL
  only: ``--db postgres``) with ``EVENT_BUS_URL`` set by ``--bus``: ``redis``
  (``CHATSVC_BENCH_REDIS_URL``, by default the local Redis) or ``postgres``
  (LISTEN/NOTIFY in the benchmark's own database). ``--bus`` also works with one
  instance, which then publishes every event to a bus nobody else reads.
  Client ``i`` talks to instance ``i % instances`` as user
  ``i // instances % users``, so each user has sockets on both instances.
- ``--followers`` (on by default with two instances; ``--no-followers``): for
  clients 2 and 3 of every 4 (with ``--abort-every 4``, one client that aborts,
  one that does not), a second socket of the same user, on the *other* instance
  (the same one with a single instance), follows each reply: it subscribes to
  the chat once ``started`` reaches the sender (also while it still reads an
  earlier reply), reads the ``snapshot`` and then the tokens to the terminal
  frame, and unsubscribes. Figures: its tokens/s
  (against its senders' tokens/s), relay latency (same stamps as above), and
  ``subscribe`` -> ``snapshot``. Errors: snapshot + tokens differing from the
  final message's content, a ``seq`` that is not the next one, tokens before any
  snapshot, a follow that stops getting frames. Shown apart, not errors: replies
  that ended before the subscription took effect (only the terminal frame, or
  nothing within 7 s of the sender's end).
- ``--slow-readers N``: N more sockets (reader ``j``: user ``j % users``,
  instance ``j // users % instances``) that subscribe to every chat of their
  user started during the run and never read (a receive buffer of a few KB,
  ``max_queue=1``, no keepalive pings), so TCP backpressure builds up to the
  server's outbox (``WS_OUTBOX_EVENTS``), which then closes them with 1013. At
  the end of the window they read what is left and note the close code (1006
  when no close frame came: it cannot get through a full TCP buffer); the
  servers' ``chatsvc_slow_consumers`` counters (polled every 0.5 s) say which
  instance closed how many, and when. Use a longer ``--duration`` (45 s): the
  kernel's send buffer on the server's side grows to about 1 MB per socket
  before the outbox starts to fill.
- Server CPU is shown per instance and summed; per 1,000 tokens it is the sum
  over the tokens the senders received (generated tokens) and over every token
  delivered (senders' and followers').
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import re
import resource
import signal
import socket as tcp
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import asyncpg
import httpx
import openai
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fake_openai import FakeOpenAI, directive
from tests.support import (
    PG_ADMIN_URL,
    Database,
    Server,
    User,
    register_and_login,
    start_server,
)

STAMP = re.compile(r"@(\d+\.\d+)")
MARKER = re.compile(r"\b(?:bench|sdk)-\d+-\d+\b")
IDLE_SECONDS = 10.0  # silence that makes a reply count as lost
BURST_IDLE_SECONDS = 30.0  # the same in burst mode: a send may wait out the database's timeout
CLOSE_WAIT_SECONDS = 1.0  # how long an abort may take to close the upstream request
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REDIS_URL = os.environ.get("CHATSVC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
INSTANCE_NAMES = "AB"
FOLLOW_GRACE_SECONDS = 7.0  # after the sender's end (a snapshot is asked for 3 times, 2 s apart)
SLOW_RECEIVE_BUFFER = 4096  # bytes of SO_RCVBUF for a slow reader (Linux doubles it)
SLOW_SEND_SECONDS = 1.0  # a subscribe not written in this time: the connection is stuck
DRAIN_IDLE_SECONDS = 3.0  # a slow reader draining at the end stops after this silence
METRICS_PERIOD = 0.5  # seconds between polls of the servers' slow-consumer counters
SERVICES = ("postgres", "redis-server")  # their CPU is reported apart
SLOW_CONSUMERS = re.compile(r"^chatsvc_slow_consumers_total (\S+)$", re.MULTILINE)
OPEN_SOCKETS = re.compile(r"^chatsvc_websockets_open (\S+)$", re.MULTILINE)
REFUSALS = ("overloaded", "rate_limited", "busy")  # deliberate refusals of a send: not errors
RESENT = ("overloaded", "rate_limited")  # refusals a burst client resends after `retry_after`
MAX_RESENDS = 5  # resends of one refused message before the client gives up on it
DEFAULT_RETRY_AFTER = 1.0  # seconds to wait when a refusal carries no `retry_after`
BURST_MARGIN_SECONDS = 0.5  # from the last client's `ready` to the burst instant
STREAMING_SETTLE_SECONDS = 5.0  # how long replies still `streaming` after the run may take
IDLE_BATCH = 200  # idle sockets opened at once
MAX_SOCKETS_PER_USER_LIMIT = 10_000  # the most the server's setting allows
RSS_SETTLE_SECONDS = 3.0  # the server's RSS must hold still this long (idle sockets)
RSS_SETTLE_LIMIT_SECONDS = 20.0  # ... or this long has passed

TARGETS = {
    "relay_p99_ms": 10.0,
    "ttft_p99_ms": 100.0,
    "abort_p99_ms": 50.0,
    "upstream_closed_share": 1.0,
    "errors": 0,
    "server_cpu_s_per_1k_tokens": 0.2,
}
#: Issue 11's targets, used with ``--burst`` (benchmark figures, not test assertions).
BURST_TARGETS = {
    "relay_p99_ms": 5.0,
    "ttft_p99_ms": 300.0,
    "abort_p99_ms": 20.0,
    "abort_landed_share": 0.99,  # met or not only when the upstream streams flat out
    "errors": 0,
    "left_streaming": 0,
    "server_cpu_s_per_1k_tokens": 0.1,  # at 200 x 10 tokens/s on PostgreSQL
}
IDLE_TARGET_MB = 150.0  # 5,000 idle authenticated WebSockets add less than this


# --- measurement records ----------------------------------------------------------------


@dataclass
class Stream:
    """One reply as a client saw it (times are ``time.time()``)."""

    marker: str
    sent_at: float  # of the send that was taken (the last one, after refusals)
    first_sent_at: float = 0.0  # of the first send (before any refusal)
    client: int = -1
    task_id: str | None = None
    chat_id: str | None = None
    started_at: float | None = None  # ``started`` received
    first_token_at: float | None = None
    first_stamp: float | None = None  # the upstream's send time of the first token
    tokens: int = 0
    abort_sent_at: float | None = None
    end: str | None = None  # done, aborted, error, refused, lost
    ended_at: float | None = None
    error: str | None = None
    code: str | None = None  # the error frame's, when it ended with one
    retry_after: float | None = None  # a refusal's, in seconds
    refusals: list[str] = field(default_factory=list)  # codes of the refused sends, in order
    content: str | None = None  # the final message's, from ``done`` or ``aborted``


@dataclass
class Follow:
    """One reply as a follower saw it: subscribed once ``started`` reached the sender."""

    stream: Stream  # the sender's view of the same reply
    subscribed_at: float
    snapshot_at: float | None = None
    last_frame_at: float = 0.0
    next_seq: int | None = None  # the seq the next token must carry
    first_seq: int | None = None  # of the first token this socket got
    parts: list[str] = field(default_factory=list)  # the snapshot's content, then each token
    tokens: int = 0
    gaps: int = 0  # tokens whose seq was not the next one
    early: int = 0  # tokens before any snapshot
    end: str | None = None  # done, aborted, error; missed (nothing came), lost
    content: str | None = None  # the final message's, from its ``done`` or ``aborted``

    @property
    def matches(self) -> bool | None:
        """Snapshot + tokens == the final message, as this socket and the sender saw it."""
        if self.snapshot_at is None or self.content is None:
            return None
        return "".join(self.parts) == self.content and self.stream.content in (None, self.content)


@dataclass
class SlowReader:
    """A socket that follows its user's chats and never reads, until the window ends."""

    index: int
    instance: str
    subscribed: int = 0
    stuck_at: float | None = None  # a subscribe could no longer be written
    drained: int = 0  # frames read at the end
    close_code: int | None = None  # None: still open after the drain
    close_reason: str = ""
    error: str | None = None


@dataclass
class Run:
    """Everything one load run collects."""

    options: argparse.Namespace
    started: float
    window_start: float
    window_end: float
    streams: list[Stream] = field(default_factory=list)
    relay: list[tuple[float, float]] = field(default_factory=list)  # (received, latency)
    failures: list[str] = field(default_factory=list)
    stray_frames: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    lag: list[tuple[float, float]] = field(default_factory=list)  # this process's loop
    fake_lag: list[tuple[float, float]] = field(default_factory=list)
    follows: list[Follow] = field(default_factory=list)
    follower_relay: list[tuple[float, float]] = field(default_factory=list)
    followed_received: list[float] = field(default_factory=list)  # followed senders' tokens
    slow: list[SlowReader] = field(default_factory=list)
    slow_closes: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    follower_queues: dict[int, asyncio.Queue[Stream | None]] = field(default_factory=dict)
    watchers: dict[int, list[asyncio.Queue[str]]] = field(default_factory=dict)  # by user
    error_codes: Counter[str] = field(default_factory=Counter)  # every error frame the senders got
    late_abort_answers: int = 0  # `not_running` errors answering an abort of a finished reply
    resends: int = 0  # refused sends sent again (burst mode)
    gate: Gate | None = None  # burst mode: opens once every client is connected
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # burst: every client is done

    @classmethod
    def begin(cls, options: argparse.Namespace) -> Run:
        started = time.time() + 0.2
        if options.burst:  # the window is known once the gate opens, and when the clients end
            return cls(options, started, math.inf, math.inf)
        window_start = started + options.ramp
        return cls(options, started, window_start, window_start + options.duration)

    def in_window(self, moment: float | None) -> bool:
        return moment is not None and self.window_start <= moment < self.window_end

    def took_token(self, stream: Stream, received: float, text: str) -> None:
        stamps = [float(stamp) for stamp in STAMP.findall(text)]
        if stamps and stream.first_token_at is None:
            stream.first_token_at, stream.first_stamp = received, stamps[0]
        self.relay.extend((received, received - stamp) for stamp in stamps)
        stream.tokens += len(stamps)
        if stream.client in self.follower_queues:
            self.followed_received.extend(received for _ in stamps)

    def took_follower_token(self, follow: Follow, received: float, text: str) -> None:
        stamps = [float(stamp) for stamp in STAMP.findall(text)]
        self.follower_relay.extend((received, received - stamp) for stamp in stamps)
        follow.tokens += len(stamps)

    def announce(self, stream: Stream) -> None:
        """A reply started: its client's follower and its user's slow readers follow it."""
        if (queue := self.follower_queues.get(stream.client)) is not None:
            queue.put_nowait(stream)
        assert stream.chat_id is not None
        for watcher in self.watchers.get(user_of(stream.client, self.options), ()):
            watcher.put_nowait(stream.chat_id)


class Gate:
    """Burst mode: once ``parties`` clients have arrived, it opens at one instant for all."""

    def __init__(self, parties: int) -> None:
        self.waiting = parties
        self.at = math.inf  # the burst instant (``time.time()``), once open
        self.opened = asyncio.Event()
        if parties <= 0:
            self._open()

    def arrive(self) -> None:
        """A client is connected (or failed to connect: it does not hold the others up)."""
        self.waiting -= 1
        if self.waiting == 0:
            self._open()

    def _open(self) -> None:
        self.at = time.time() + BURST_MARGIN_SECONDS
        self.opened.set()

    async def wait(self) -> float:
        """Wait until every client has arrived; returns the burst instant."""
        await self.opened.wait()
        return self.at


def cpu_seconds(stat_path: str) -> float:
    """utime + stime from a ``/proc/.../stat`` file (a process, or one thread of it)."""
    return stat_cpu_seconds(Path(stat_path).read_text())


def stat_cpu_seconds(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def services_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of every ``postgres`` and ``redis-server`` process on the machine.

    Approximate: a process that exits takes its CPU time with it, and the
    services may also be working for someone else.
    """
    totals = dict.fromkeys(SERVICES, 0.0)
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = path.read_text()
        except OSError:
            continue  # it exited meanwhile
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        if name in totals:
            totals[name] += stat_cpu_seconds(stat)
    return totals


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds all cores spent busy so far (``machine``), of which in interrupts
    (``interrupts``: the loopback network's softirqs, mostly), from ``/proc/stat``."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return {
        "machine": (user + nice + system + irq + softirq + steal) / CLOCK_TICKS,
        "interrupts": (irq + softirq) / CLOCK_TICKS,
    }


def cpu_snapshot(server_pids: dict[str, int], fake: FakeUpstream) -> dict[str, float]:
    """CPU seconds so far of this process, the fake, each server (``server A``...), all."""
    times = os.times()
    snapshot = {
        "generator": times.user + times.system,
        "fake": cpu_seconds(f"/proc/{fake.pid}/stat"),
        **machine_cpu_seconds(),
        **services_cpu_seconds(),
        "at": time.time(),
    }
    for name, pid in server_pids.items():
        snapshot[f"server {name}"] = cpu_seconds(f"/proc/{pid}/stat")
    return snapshot


async def probe_cpu(run: Run, server_pids: dict[str, int], fake: FakeUpstream) -> None:
    """Read the CPU counters at both ends of the window (and use the actual read times).

    In burst mode the window opens just before the burst instant (so that every send
    falls in it) and closes once every client is done.
    """
    if run.gate is not None:
        burst_at = await run.gate.wait()
        await asyncio.sleep(max(0.0, burst_at - 0.02 - time.time()))
        before = cpu_snapshot(server_pids, fake)
        run.window_start = before["at"]
        await run.finished.wait()
        after = cpu_snapshot(server_pids, fake)
    else:
        await asyncio.sleep(max(0.0, run.window_start - time.time()))
        before = cpu_snapshot(server_pids, fake)
        await asyncio.sleep(max(0.0, run.window_end - time.time()))
        after = cpu_snapshot(server_pids, fake)
    run.window_start, run.window_end = before["at"], after["at"]
    run.cpu = {key: after[key] - before[key] for key in before if key != "at"}


# --- the fake upstream, in a process of its own -----------------------------------------


class UpstreamRecord(NamedTuple):
    """What the fake saw of one request: the part of its ``Record`` used here."""

    started_at: float  # when the request reached the fake
    completed: bool  # every token was sent
    disconnected: bool  # the client hung up
    disconnected_at: float | None


async def watch_lag(samples: list[tuple[float, float]], period: float = 0.01) -> None:
    """How late the event loop wakes a task from a 10 ms sleep: (when, lateness) samples."""
    loop = asyncio.get_running_loop()
    while True:
        planned = loop.time() + period
        await asyncio.sleep(period)
        samples.append((time.time(), loop.time() - planned))


def run_fake(connection: Connection) -> None:
    """The fake's process: sends its URL, then answers ``records`` and ``lag`` until ``stop``."""
    fake = FakeOpenAI().start()
    lag: list[tuple[float, float]] = []
    watcher = asyncio.run_coroutine_threadsafe(watch_lag(lag), fake._loop)
    connection.send(fake.url)
    while (request := connection.recv()) != "stop":
        if request == "lag":
            connection.send(list(lag))
            continue
        digest = {}
        for record in list(fake.records):
            if found := MARKER.search(record.last_user_message):
                digest[found.group()] = (
                    record.started_at,
                    record.completed,
                    record.disconnected,
                    record.disconnected_at,
                )
        connection.send(digest)
    fake._loop.call_soon_threadsafe(watcher.cancel)
    fake.stop()


class FakeUpstream:
    """``tests/fake_openai.py`` run in a child process.

    In this process it would share the GIL with the clients: at full speed the
    two together saturated one core and the figures measured the generator.
    Apart, its CPU is also counted apart.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self.process = context.Process(target=run_fake, args=(child,), daemon=True)
        self.process.start()
        if not self._pipe.poll(30):
            self.stop()
            raise RuntimeError("the fake upstream did not start")
        self.url: str = self._pipe.recv()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def records(self) -> dict[str, UpstreamRecord]:
        """Every request so far, by the marker in its message."""
        self._pipe.send("records")
        return {marker: UpstreamRecord(*seen) for marker, seen in self._pipe.recv().items()}

    def lag(self) -> list[tuple[float, float]]:
        """The fake's event-loop lag samples (see ``watch_lag``)."""
        self._pipe.send("lag")
        return self._pipe.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


# --- WebSocket clients -----------------------------------------------------------------


def start_time(index: int, run: Run) -> float:
    """Clients start evenly spread over the ramp."""
    return run.started + index * run.options.ramp / run.options.clients


def aborts(index: int, options: argparse.Namespace) -> bool:
    """Every ``--abort-every``-th client aborts each of its replies."""
    return options.abort_every > 0 and index % options.abort_every == options.abort_every - 1


def aborts_reply(index: int, number: int, options: argparse.Namespace) -> bool:
    """Whether client ``index`` aborts its reply ``number`` (0 first).

    With ``--abort-share S`` (burst mode), the replies are numbered client after client
    (``k = index x messages + number``) and reply ``k`` is aborted when it takes the
    count of aborts so far, ``floor(k x S)``, one further: exactly a share S of them,
    spread evenly over the clients and over each chat's messages. Otherwise every
    ``--abort-every``-th client aborts each of its replies.
    """
    if options.abort_share is None:
        return aborts(index, options)
    k = index * options.messages + number
    share = options.abort_share
    return math.floor((k + 1) * share + 1e-9) > math.floor(k * share + 1e-9)


def instance_of(index: int, options: argparse.Namespace) -> int:
    """Clients alternate between the instances: even index on A, odd on B."""
    return index % options.instances


def user_of(index: int, options: argparse.Namespace) -> int:
    """The user of client ``index``; every user has clients on every instance."""
    return index // options.instances % options.users


def followed(index: int, options: argparse.Namespace) -> bool:
    """Clients 2 and 3 of every 4 have a follower (with ``--followers``)."""
    return bool(options.followers) and index % 4 >= 2


async def expect_ready(socket: ClientConnection) -> None:
    async with asyncio.timeout(IDLE_SECONDS):
        ready = json.loads(await socket.recv())
    if ready.get("type") != "ready":
        raise RuntimeError(f"first frame was {ready}")


def sender_socket(url: str, options: argparse.Namespace) -> Any:
    """A sending client's WebSocket (offering permessage-deflate as browsers do)."""
    return connect(
        url,
        max_size=None,
        open_timeout=30,
        compression=None if options.no_deflate else "deflate",
    )


async def client(index: int, url: str, run: Run) -> None:
    options = run.options
    await asyncio.sleep(max(0.0, start_time(index, run) - time.time()))
    abort_after = options.abort_after if aborts(index, options) else None
    script = directive(tokens=options.tokens, rate=options.rate, timestamps=True)
    try:
        async with sender_socket(url, options) as socket:
            await expect_ready(socket)
            count = 0
            while time.time() < run.window_end:
                stream = Stream(f"bench-{index}-{count}", time.time(), client=index)
                count += 1
                run.streams.append(stream)
                content = f"{stream.marker} {script}"
                frame = {"action": "send_message", "content": content, "request_id": stream.marker}
                await socket.send(json.dumps(frame))
                await read_reply(socket, stream, run, abort_after)
                if stream.end not in ("done", "aborted"):
                    break
    except (OSError, TimeoutError, RuntimeError, WebSocketException) as exc:
        run.failures.append(f"client {index}: {type(exc).__name__}: {exc}")
    finally:
        if (queue := run.follower_queues.get(index)) is not None:
            queue.put_nowait(None)  # the follower stops after the reply it reads


async def burst_client(index: int, url: str, run: Run) -> None:
    """Connects and reads ``ready``, waits at the gate for the burst instant, then sends
    ``--messages`` messages in one chat, each once the previous reply has ended."""
    options = run.options
    assert run.gate is not None
    arrived = False
    script = directive(tokens=options.tokens, rate=options.rate, timestamps=True)
    try:
        async with sender_socket(url, options) as socket:
            await expect_ready(socket)
            run.gate.arrive()
            arrived = True
            await asyncio.sleep(max(0.0, await run.gate.wait() - time.time()))
            chat_id: str | None = None
            for number in range(options.messages):
                stream = Stream(f"bench-{index}-{number}", time.time(), client=index)
                run.streams.append(stream)
                frame = {
                    "action": "send_message",
                    "content": f"{stream.marker} {script}",
                    "request_id": stream.marker,
                }
                if chat_id is not None:
                    frame["chat_id"] = chat_id
                abort_after = options.abort_after if aborts_reply(index, number, options) else None
                await send_with_resends(socket, frame, stream, run, abort_after)
                if stream.end == "lost":
                    break  # the socket may be stuck: its next reply would not say much
                chat_id = stream.chat_id or chat_id
    except (OSError, TimeoutError, RuntimeError, WebSocketException) as exc:
        run.failures.append(f"client {index}: {type(exc).__name__}: {exc}")
    finally:
        if not arrived:
            run.gate.arrive()
        if (queue := run.follower_queues.get(index)) is not None:
            queue.put_nowait(None)


async def send_with_resends(
    socket: ClientConnection,
    frame: dict[str, Any],
    stream: Stream,
    run: Run,
    abort_after: int | None,
) -> None:
    """Send ``frame`` and read its reply; a send refused with ``overloaded`` or
    ``rate_limited`` is sent again after its ``retry_after`` (1 s without one), up to
    ``MAX_RESENDS`` times. ``stream.sent_at`` is the last send's."""
    stream.first_sent_at = time.time()
    for attempt in range(MAX_RESENDS + 1):
        stream.sent_at = time.time()
        await socket.send(json.dumps(frame))
        await read_reply(socket, stream, run, abort_after)
        if stream.end != "refused":
            return
        assert stream.code is not None
        stream.refusals.append(stream.code)
        if stream.code not in RESENT or attempt == MAX_RESENDS:
            return
        run.resends += 1
        await asyncio.sleep(
            DEFAULT_RETRY_AFTER if stream.retry_after is None else stream.retry_after
        )
        stream.end = stream.ended_at = stream.code = stream.error = stream.retry_after = None


async def read_reply(
    socket: ClientConnection, stream: Stream, run: Run, abort_after: int | None
) -> None:
    idle = BURST_IDLE_SECONDS if run.options.burst else IDLE_SECONDS
    while True:
        try:
            async with asyncio.timeout(idle):
                raw = await socket.recv()
        except TimeoutError:
            stream.end = "lost"
            return
        received = time.time()
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "token":
            run.took_token(stream, received, frame["token"])
            if (
                abort_after is not None
                and stream.abort_sent_at is None
                and stream.tokens >= abort_after
                and stream.task_id is not None
            ):
                stream.abort_sent_at = time.time()
                await socket.send(json.dumps({"action": "abort", "task_id": stream.task_id}))
        elif kind == "started":
            stream.task_id, stream.chat_id = frame["task_id"], frame["chat_id"]
            stream.started_at = received
            run.announce(stream)
        elif kind == "error":
            if took_error(stream, frame, received, run):
                return
        elif kind in ("done", "aborted"):
            if frame.get("task_id") not in (None, stream.task_id):
                run.stray_frames.append(frame)
                continue
            stream.end, stream.ended_at = kind, received
            stream.content = frame["message"]["content"]
            return


def took_error(stream: Stream, frame: dict[str, Any], received: float, run: Run) -> bool:
    """Count an ``error`` frame by its code; True when it ends ``stream``.

    A refusal (``REFUSALS``) before ``started`` refuses the send: the reply ends
    ``refused``. Not the stream's: another task's, another request's, a
    ``not_running`` (an abort of a reply that ended first), a refusal of a frame
    sent after ``started`` (an abort).
    """
    code = str(frame.get("code"))
    run.error_codes[code] += 1
    task_id, request_id = frame.get("task_id"), frame.get("request_id")
    if code == "not_running":
        run.late_abort_answers += 1
        run.stray_frames.append(frame)
        return False
    refusal = code in REFUSALS
    if (
        task_id not in (None, stream.task_id)
        or request_id not in (None, stream.marker)
        or (refusal and task_id is None and stream.task_id is not None)
    ):
        run.stray_frames.append(frame)
        return False
    stream.end = "refused" if refusal and stream.task_id is None else "error"
    stream.ended_at, stream.code = received, code
    stream.error = f"{code}: {frame.get('message')}"
    retry_after = frame.get("retry_after")
    stream.retry_after = float(retry_after) if isinstance(retry_after, int | float) else None
    return True


# --- followers on the other instance ---------------------------------------------------


async def follower(index: int, url: str, run: Run) -> None:
    """A second socket of client ``index``'s user that follows each of its replies.

    It subscribes to each reply's chat as soon as the sender has ``started``,
    also while it still reads an earlier one, so a slow follow does not delay
    the next.
    """
    following: dict[str, Follow] = {}  # by chat id, until their end
    try:
        async with connect(
            url,
            max_size=None,
            open_timeout=30,
            compression=None if run.options.no_deflate else "deflate",
        ) as socket:
            await expect_ready(socket)
            sender_stopped = asyncio.Event()
            reading = asyncio.create_task(read_follows(socket, following, sender_stopped, run))
            try:
                await subscribe_each(socket, run.follower_queues[index], following, run)
                sender_stopped.set()
                await reading  # until every follow has ended
            finally:
                reading.cancel()
    except (OSError, TimeoutError, RuntimeError, WebSocketException) as exc:
        run.failures.append(f"follower {index}: {type(exc).__name__}: {exc}")


async def subscribe_each(
    socket: ClientConnection,
    chats: asyncio.Queue[Stream | None],
    following: dict[str, Follow],
    run: Run,
) -> None:
    """Subscribe to the chat of each reply the sender starts, until the sender stops."""
    while (stream := await chats.get()) is not None:
        assert stream.chat_id is not None
        follow = following[stream.chat_id] = Follow(stream, time.time())
        run.follows.append(follow)
        await socket.send(json.dumps({"action": "subscribe", "chat_id": stream.chat_id}))


async def read_follows(
    socket: ClientConnection, following: dict[str, Follow], sender_stopped: asyncio.Event, run: Run
) -> None:
    """Read the followed chats' frames, unsubscribing from each that ended, until the
    sender has stopped and every follow has ended."""
    while following or not sender_stopped.is_set():
        try:
            async with asyncio.timeout(0.5):
                frame = json.loads(await socket.recv())
        except TimeoutError:
            frame = None
        now = time.time()
        if frame is not None:
            follow = following.get(frame.get("chat_id"))
            if follow is None or frame.get("task_id") != follow.stream.task_id:
                run.stray_frames.append(frame)  # chat_created, message, started; a late frame
            else:
                took_follow_frame(follow, frame, now, run)
        for chat_id, follow in list(following.items()):
            follow.end = follow.end or follow_timed_out(follow, now)
            if follow.end is not None:
                del following[chat_id]
                await socket.send(json.dumps({"action": "unsubscribe", "chat_id": chat_id}))


def follow_timed_out(follow: Follow, now: float) -> str | None:
    """``missed``/``lost`` once waiting longer makes no sense; None: keep waiting."""
    ended = follow.stream.ended_at
    if ended is not None and now - max(ended, follow.subscribed_at) > FOLLOW_GRACE_SECONDS:
        return "missed" if follow.snapshot_at is None and not follow.tokens else "lost"
    return "lost" if now - max(follow.last_frame_at, follow.subscribed_at) > IDLE_SECONDS else None


def took_follow_frame(follow: Follow, frame: dict[str, Any], received: float, run: Run) -> None:
    """One frame of a followed reply: ``snapshot``, tokens from its ``seq + 1``, the end."""
    follow.last_frame_at = received
    kind = frame.get("type")
    if kind == "snapshot" and follow.snapshot_at is None:
        follow.snapshot_at, follow.next_seq = received, frame["seq"] + 1
        follow.parts.append(frame["content"])
    elif kind == "token":
        if follow.first_seq is None:
            follow.first_seq = frame["seq"]
        if follow.snapshot_at is None:
            follow.early += 1
        elif frame["seq"] != follow.next_seq:
            follow.gaps += 1
        follow.next_seq = frame["seq"] + 1
        follow.parts.append(frame["token"])
        run.took_follower_token(follow, received, frame["token"])
    elif kind in ("done", "aborted", "error"):
        follow.end = kind
        if kind != "error":
            follow.content = frame["message"]["content"]


# --- slow readers ----------------------------------------------------------------------


async def small_socket(url: str) -> tcp.socket:
    """A TCP connection to ``url``'s server whose receive buffer is set small before connecting."""
    parts = urlsplit(url)
    sock = tcp.socket(tcp.AF_INET, tcp.SOCK_STREAM)
    try:
        sock.setsockopt(tcp.SOL_SOCKET, tcp.SO_RCVBUF, SLOW_RECEIVE_BUFFER)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    except OSError:
        sock.close()
        raise
    return sock


async def slow_reader(reader: SlowReader, url: str, run: Run, chats: asyncio.Queue[str]) -> None:
    """Subscribes to every chat of its user that starts, reads nothing until the window ends."""
    await asyncio.sleep(max(0.0, run.started - time.time()))
    try:
        async with connect(
            url,
            sock=await small_socket(url),
            max_size=None,
            max_queue=1,
            ping_interval=None,  # its pongs would not be read either
            open_timeout=30,
            compression=None,
        ) as socket:
            await expect_ready(socket)
            while reader.stuck_at is None:
                try:
                    async with asyncio.timeout(max(0.0, run.window_end - time.time())):
                        chat_id = await chats.get()
                except TimeoutError:
                    break
                try:
                    async with asyncio.timeout(SLOW_SEND_SECONDS):
                        frame = {"action": "subscribe", "chat_id": chat_id}
                        await socket.send(json.dumps(frame))
                except (TimeoutError, ConnectionClosed):
                    reader.stuck_at = time.time()
                else:
                    reader.subscribed += 1
            await drain(socket, reader)
    except (OSError, TimeoutError, RuntimeError, WebSocketException) as exc:
        reader.error = f"{type(exc).__name__}: {exc}"


async def drain(socket: ClientConnection, reader: SlowReader) -> None:
    """Read what is left, to the server's close frame (or a silence: the socket is open)."""
    try:
        while True:
            async with asyncio.timeout(DRAIN_IDLE_SECONDS):
                await socket.recv()
            reader.drained += 1
    except TimeoutError:
        return
    except ConnectionClosed as exc:
        reader.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
        reader.close_reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"


async def slow_consumers(http: httpx.AsyncClient, server: Server) -> float:
    """The server's ``chatsvc_slow_consumers_total``: sockets it closed with 1013."""
    found = SLOW_CONSUMERS.search((await http.get(f"{server.url}/metrics")).text)
    return float(found.group(1)) if found else 0.0


async def note_slow_closes(run: Run, servers: dict[str, Server]) -> None:
    """Note the servers' slow-consumer counters where they changed: (when, count) per instance."""
    async with httpx.AsyncClient(timeout=5) as http:
        for name, server in servers.items():
            try:
                count = await slow_consumers(http, server)
            except httpx.HTTPError:
                continue
            seen = run.slow_closes.setdefault(name, [])
            if not seen or seen[-1][1] != count:
                seen.append((time.time(), count))


async def watch_slow_closes(run: Run, servers: dict[str, Server]) -> None:
    while True:
        await note_slow_closes(run, servers)
        await asyncio.sleep(METRICS_PERIOD)


# --- one load run ----------------------------------------------------------------------


async def measure_relay(
    servers: list[Server], users: list[User], fake: FakeUpstream, options: argparse.Namespace
) -> dict[str, Any]:
    run = Run.begin(options)
    named = dict(zip(INSTANCE_NAMES, servers, strict=False))

    def url(instance: int, user: int) -> str:
        return f"{servers[instance].ws_url}?token={users[user].token}"

    work: list[Awaitable[None]] = [
        probe_cpu(run, {name: s.process.pid for name, s in named.items()}, fake)
    ]
    senders: list[Awaitable[None]] = []
    if options.burst:
        run.gate = Gate(options.clients)
    for index in range(options.clients):
        instance, user = instance_of(index, options), user_of(index, options)
        sender = burst_client if options.burst else client
        senders.append(sender(index, url(instance, user), run))
        if followed(index, options):
            run.follower_queues[index] = asyncio.Queue()
            other = (instance + 1) % options.instances
            work.append(follower(index, url(other, user), run))
    for index in range(options.slow_readers):
        user, instance = index % options.users, index // options.users % options.instances
        reader = SlowReader(index, INSTANCE_NAMES[instance])
        run.slow.append(reader)
        chats: asyncio.Queue[str] = asyncio.Queue()
        run.watchers.setdefault(user, []).append(chats)
        work.append(slow_reader(reader, url(instance, user), run, chats))
    background = [watch_slow_closes(run, named)] if options.slow_readers else []
    await gather_with_lag(run, fake, all_of(run, senders), *work, background=background)
    if options.slow_readers:
        await note_slow_closes(run, named)
    records = await wait_for_hangups(fake, run)
    statuses = await settle_streaming(servers[0].db)
    return {**summarize_relay(run, records), **statuses}


async def settle_streaming(db: Database) -> dict[str, Any]:
    """Replies still ``streaming`` in the database once the clients are done, and after
    waiting up to ``STREAMING_SETTLE_SECONDS`` for them to settle; every reply's status."""

    def count() -> int:
        return db.query("SELECT count(*) AS n FROM message WHERE status = 'streaming'")[0]["n"]

    at_end = await asyncio.to_thread(count)
    waited = time.monotonic()
    left = at_end
    while left and time.monotonic() - waited < STREAMING_SETTLE_SECONDS:
        await asyncio.sleep(0.25)
        left = await asyncio.to_thread(count)
    rows = await asyncio.to_thread(
        db.query,
        "SELECT status, count(*) AS n FROM message WHERE role = 'assistant' GROUP BY status",
    )
    return {
        "streaming_at_end": at_end,
        "left_streaming": left,
        "streaming_settle_s": round(time.monotonic() - waited, 2) if at_end else 0.0,
        "reply_statuses": {row["status"]: row["n"] for row in rows},
    }


async def all_of(run: Run, clients: Sequence[Awaitable[None]]) -> None:
    """Run the clients; once every one is done, ``run.finished`` is set (ends a burst window)."""
    try:
        await asyncio.gather(*clients)
    finally:
        run.finished.set()


async def gather_with_lag(
    run: Run, fake: FakeUpstream, *work: Awaitable[None], background: Sequence[Awaitable[None]] = ()
) -> None:
    """Run ``work`` while probing the lag of this event loop and of the fake's.

    ``background`` runs alongside, and is cancelled once ``work`` is done.
    """
    watchers = [asyncio.ensure_future(watch_lag(run.lag)), *map(asyncio.ensure_future, background)]
    try:
        await asyncio.gather(*work)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    run.fake_lag = fake.lag()


async def wait_for_hangups(fake: FakeUpstream, run: Run) -> dict[str, UpstreamRecord]:
    """The fake's records of the run; waits a little for aborted requests to hang up."""
    aborted = [s.marker for s in run.streams if s.end == "aborted"]
    deadline = time.time() + CLOSE_WAIT_SECONDS
    while True:
        records = fake.records()
        if time.time() >= deadline or all(
            m in records and records[m].disconnected for m in aborted
        ):
            return records
        await asyncio.sleep(0.05)


# --- SDK ceiling -----------------------------------------------------------------------


async def sdk_client(index: int, sdk: openai.AsyncOpenAI, run: Run) -> None:
    """One stream after another, like ``client``; an abort is leaving the stream early.

    In burst mode, like ``burst_client``: every client starts at the gate's instant
    and makes ``--messages`` streams.
    """
    options = run.options
    if run.gate is not None:
        await asyncio.sleep(max(0.0, await run.gate.wait() - time.time()))
    else:
        await asyncio.sleep(max(0.0, start_time(index, run) - time.time()))
    script = directive(tokens=options.tokens, rate=options.rate, timestamps=True)
    count = 0
    while count < options.messages if run.gate is not None else time.time() < run.window_end:
        abort_after = options.abort_after if aborts_reply(index, count, options) else None
        stream = Stream(f"sdk-{index}-{count}", time.time())
        count += 1
        run.streams.append(stream)
        try:
            response = await sdk.chat.completions.create(
                model="bench",
                messages=[{"role": "user", "content": f"{stream.marker} {script}"}],
                stream=True,
            )
            async with response:  # leaving it closes the connection
                async for chunk in response:
                    received = time.time()
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            run.took_token(stream, received, choice.delta.content)
                    if abort_after is not None and stream.tokens >= abort_after:
                        stream.abort_sent_at = received
                        break
        except openai.OpenAIError as exc:
            stream.end, stream.error = "error", f"{type(exc).__name__}: {exc}"
            return
        stream.end, stream.ended_at = "done", time.time()


async def measure_ceiling(fake: FakeUpstream, options: argparse.Namespace) -> dict[str, Any]:
    run = Run.begin(options)
    if options.burst:
        run.gate = Gate(0)  # nothing to connect first
    sdk = openai.AsyncOpenAI(base_url=fake.url, api_key="x", max_retries=0)
    try:
        clients = [sdk_client(index, sdk, run) for index in range(options.clients)]
        await gather_with_lag(run, fake, probe_cpu(run, {}, fake), all_of(run, clients))
    finally:
        await sdk.close()
    tokens, latencies = tokens_in_window(run)
    window = run.window_end - run.window_start
    return {
        "window_s": round(window, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / window, 1),
        "latency_ms": spread(latencies),
        "errors": sum(1 for s in run.streams if s.end != "done"),
        "client_cpu_s_per_1k_tokens": per_1k(run.cpu["generator"], tokens),
        "client_cpu_share": round(run.cpu["generator"] / window, 3),
        "fake_cpu_share": round(run.cpu["fake"] / window, 3),
        "loop_lag_ms": loop_lag(run),
    }


# --- figures -----------------------------------------------------------------------------


def spread(values_s: list[float]) -> dict[str, float | int | None]:
    """p50, p99 and max in milliseconds (nearest rank), and the sample count."""
    ordered = sorted(values_s)
    if not ordered:
        return {"p50": None, "p99": None, "max": None, "n": 0}

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 2)

    return {"p50": rank(0.5), "p99": rank(0.99), "max": rank(1.0), "n": len(ordered)}


def per_1k(cpu_s: float, tokens: int) -> float | None:
    return round(cpu_s / tokens * 1000, 4) if tokens else None


def loop_lag(run: Run) -> dict[str, dict[str, float | int | None]]:
    """Event-loop lag in the window, of the clients' loop and of the fake's."""
    return {
        name: spread([lateness for when, lateness in samples if run.in_window(when)])
        for name, samples in (("clients", run.lag), ("fake", run.fake_lag))
    }


def tokens_in_window(run: Run) -> tuple[int, list[float]]:
    latencies = [latency for received, latency in run.relay if run.in_window(received)]
    return len(latencies), latencies


def summarize_relay(run: Run, records: dict[str, UpstreamRecord]) -> dict[str, Any]:
    options = run.options
    window = run.window_end - run.window_start
    tokens, latencies = tokens_in_window(run)
    ttft, ttft_net = [], []
    to_started = [
        s.started_at - s.sent_at
        for s in run.streams
        if s.started_at is not None and run.in_window(s.sent_at)
    ]
    with_refusals = [  # TTFT from the first send, of the replies refused at least once
        s.first_token_at - s.first_sent_at
        for s in run.streams
        if s.refusals and s.first_token_at is not None and run.in_window(s.first_sent_at)
    ]
    for stream in run.streams:
        if stream.first_token_at is None or not run.in_window(stream.sent_at):
            continue
        ttft.append(stream.first_token_at - stream.sent_at)
        if (record := records.get(stream.marker)) is not None:
            ttft_net.append(upstream_free_ttft(stream, record))
    aborted = [s for s in run.streams if s.abort_sent_at is not None and s.end == "aborted"]
    abort_latency = [
        s.ended_at - s.abort_sent_at for s in aborted if run.in_window(s.abort_sent_at)
    ]
    seen = [(s, records[s.marker]) for s in aborted if s.marker in records]
    finished_first = [r for _, r in seen if r.completed]  # had sent everything already
    closed = [(s, r) for s, r in seen if r.disconnected and not r.completed]
    close_latency = [r.disconnected_at - s.abort_sent_at for s, r in closed if r.disconnected_at]
    late = [s for s in run.streams if s.abort_sent_at is not None and s.end == "done"]
    error_frames = [s for s in run.streams if s.end == "error"]
    # Every error frame counts, also those that did not end a reply; not the deliberate
    # refusals, nor `not_running` (the answer to an abort of a reply that had ended).
    other_frames = sum(
        n for code, n in run.error_codes.items() if code not in (*REFUSALS, "not_running")
    )
    lost = [s for s in run.streams if s.end == "lost"]  # a failed client's reply: in failures
    short = [s for s in run.streams if s.end == "done" and s.tokens != options.tokens]
    follows = summarize_follows(run)
    follow_errors = follows["errors"] if follows else 0
    errors = other_frames + len(lost) + len(short) + len(run.failures) + follow_errors
    examples = [f"{s.marker}: {s.error}" for s in error_frames[:3]] + run.failures[:3]
    refused = [s for s in run.streams if s.refusals or s.end == "refused"]
    servers = {k.removeprefix("server "): v for k, v in run.cpu.items() if k.startswith("server ")}
    server_cpu = sum(servers.values())
    delivered = tokens + (follows["tokens"] if follows else 0)
    return {
        "window_s": round(window, 2),
        "replies": len(run.streams),
        "replies_started_per_s": round(
            sum(run.in_window(s.sent_at) for s in run.streams) / window, 1
        ),
        "tokens": tokens,
        "tokens_per_s": round(tokens / window, 1),
        "offered_tokens_per_s": options.clients * options.rate if options.rate else None,
        "relay_ms": spread(latencies),
        "ttft_ms": spread(ttft),
        "ttft_net_ms": spread(ttft_net),
        "send_started_ms": spread(to_started),
        "ttft_from_first_send_ms": spread(with_refusals),
        "abort_ms": spread(abort_latency),
        "aborts_answered": len(aborted),
        "aborts_late": len(late),
        # How long such a reply took to reach its client whole, from its first token: a
        # reply that arrives faster than an abort's round trip cannot be aborted.
        "late_reply_ms": spread(
            [s.ended_at - s.first_token_at for s in late if s.ended_at and s.first_token_at]
        ),
        "abort_landed_share": round(len(aborted) / (len(aborted) + len(late)), 4)
        if aborted or late
        else None,
        "upstream_closed": len(closed),
        "upstream_finished_first": len(finished_first),
        "upstream_closed_share": round(len(closed) / len(aborted), 4) if aborted else None,
        "upstream_close_ms": spread(close_latency),
        "errors": errors,
        "error_codes": dict(run.error_codes.most_common()),
        "refusals": {
            "frames": sum(run.error_codes[code] for code in REFUSALS),
            "replies_refused_at_least_once": len(refused),
            "resends": run.resends,
            "replies_given_up": sum(1 for s in run.streams if s.end == "refused"),
        },
        "late_abort_answers": run.late_abort_answers,
        "error_detail": {
            "error_frames": other_frames,
            "replies_ended_by_error": len(error_frames),
            "lost": len(lost),
            "short": len(short),
            "client_failures": len(run.failures),
            "follower_errors": follow_errors,
            "stray_frames": len(run.stray_frames),
            "examples": examples,
        },
        "followers": follows,
        "slow_readers": summarize_slow(run),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_s_per_1k_tokens": per_1k(server_cpu, tokens),
        "server_cpu_s_per_1k_delivered": per_1k(server_cpu, delivered),
        "server_cpu_share": round(server_cpu / window, 3),
        "server_cpu_share_by_instance": {
            name: round(cpu / window, 3) for name, cpu in servers.items()
        },
        "generator_cpu_share": round(run.cpu["generator"] / window, 3),
        "fake_cpu_share": round(run.cpu["fake"] / window, 3),
        "machine_cpu_share": round(run.cpu["machine"] / window, 3),
        "service_cpu_share": {
            name: round(run.cpu[name] / window, 3) for name in (*SERVICES, "interrupts")
        },
        "other_cpu_share": round(
            (
                run.cpu["machine"]
                - server_cpu
                - run.cpu["generator"]
                - run.cpu["fake"]
                - sum(run.cpu[name] for name in (*SERVICES, "interrupts"))
            )
            / window,
            3,
        ),
        "loop_lag_ms": loop_lag(run),
    }


def summarize_follows(run: Run) -> dict[str, Any] | None:
    """The followers' figures (see the module docstring); None without followers."""
    if not run.options.followers:
        return None
    window = run.window_end - run.window_start
    latencies = [latency for received, latency in run.follower_relay if run.in_window(received)]
    senders = sum(1 for received in run.followed_received if run.in_window(received))
    snapshot = [
        f.snapshot_at - f.subscribed_at
        for f in run.follows
        if f.snapshot_at is not None and run.in_window(f.subscribed_at)
    ]
    ended = [f for f in run.follows if f.end in ("done", "aborted")]
    mismatches = [f for f in run.follows if f.matches is False]
    gapped = [f for f in run.follows if f.gaps]
    early = [f for f in run.follows if f.early]
    lost = [f for f in run.follows if f.end == "lost"]
    error_frames = [f for f in run.follows if f.end == "error"]
    examples = [follow_text(f) for f in [*mismatches, *gapped, *early, *lost][:3]]
    return {
        "follows": len(run.follows),
        "tokens": len(latencies),
        "tokens_per_s": round(len(latencies) / window, 1),
        "senders_tokens_per_s": round(senders / window, 1),
        "relay_ms": spread(latencies),
        "snapshot_ms": spread(snapshot),
        "checked": sum(1 for f in ended if f.matches is not None),
        "terminal_only": sum(1 for f in ended if f.snapshot_at is None and not f.tokens),
        "missed": sum(1 for f in run.follows if f.end == "missed"),
        "mismatches": len(mismatches),
        "with_gaps": len(gapped),
        "with_early_tokens": len(early),
        "lost": len(lost),
        "error_frames": len(error_frames),
        "errors": len(mismatches) + len(gapped) + len(early) + len(lost) + len(error_frames),
        "examples": examples,
    }


def follow_text(follow: Follow) -> str:
    """One follow, for the examples of what went wrong."""
    ended = follow.stream.ended_at
    sender = (
        ""
        if ended is None
        else f"; the sender's end came {ended - follow.subscribed_at:+.2f} s after the subscribe"
    )
    return (
        f"{follow.stream.marker}: {follow.end}, snapshot {'yes' if follow.snapshot_at else 'no'}, "
        f"{follow.tokens} tokens from seq {follow.first_seq}, gaps {follow.gaps}, "
        f"early {follow.early}, matches {follow.matches}{sender}"
    )


def summarize_slow(run: Run) -> dict[str, Any] | None:
    """What became of the slow readers; None without them."""
    if not run.slow:
        return None
    closed_at = [  # seconds after the end of the ramp, one per socket the servers closed
        when - run.window_start
        for seen in run.slow_closes.values()
        for (when, count), (_, before) in zip(seen[1:], seen, strict=False)
        for _ in range(int(count - before))
    ]
    return {
        "sockets": len(run.slow),
        "subscribes_sent": sum(r.subscribed for r in run.slow),
        "stuck": sum(1 for r in run.slow if r.stuck_at is not None),
        "close_codes": dict(Counter(str(r.close_code or "open") for r in run.slow)),
        "closed_by_server": {
            name: int(seen[-1][1] - seen[0][1]) for name, seen in run.slow_closes.items()
        },
        "closed_at_s": sorted(round(t, 1) for t in closed_at),
        "drained_frames": sum(r.drained for r in run.slow),
        "errors": [f"slow reader {r.index}: {r.error}" for r in run.slow if r.error],
    }


def upstream_free_ttft(stream: Stream, record: UpstreamRecord) -> float:
    """TTFT less the upstream's own wait: (request reached the fake - sent) + first relay."""
    assert stream.first_token_at is not None
    assert stream.first_stamp is not None
    return (record.started_at - stream.sent_at) + (stream.first_token_at - stream.first_stamp)


# --- report ------------------------------------------------------------------------------


def targets_for(options: argparse.Namespace) -> dict[str, float]:
    """Issue 11's targets in burst mode, the relay's usual ones otherwise."""
    return BURST_TARGETS if options.burst else TARGETS


def verdicts(relay: dict[str, Any], options: argparse.Namespace) -> dict[str, bool | None]:
    """Each target: met (True), missed (False) or not measured (None).

    In burst mode, aborts landing is judged only when the upstream streams flat out.
    """
    targets = targets_for(options)

    def below(key: str, value: float | None) -> bool | None:
        return None if value is None or key not in targets else value < targets[key]

    def at_least(key: str, value: float | None) -> bool | None:
        return None if value is None or key not in targets else value >= targets[key]

    def equal(key: str, value: float | None) -> bool | None:
        return None if value is None or key not in targets else value == targets[key]

    landed = relay["abort_landed_share"] if options.rate == 0 else None
    return {
        "relay_p99_ms": below("relay_p99_ms", relay["relay_ms"]["p99"]),
        "ttft_p99_ms": below("ttft_p99_ms", relay["ttft_net_ms"]["p99"]),
        "abort_p99_ms": below("abort_p99_ms", relay["abort_ms"]["p99"]),
        "upstream_closed_share": at_least("upstream_closed_share", relay["upstream_closed_share"]),
        "abort_landed_share": at_least("abort_landed_share", landed),
        "errors": equal("errors", relay["errors"]),
        "left_streaming": equal("left_streaming", relay["left_streaming"]),
        "server_cpu_s_per_1k_tokens": below(
            "server_cpu_s_per_1k_tokens", relay["server_cpu_s_per_1k_tokens"]
        ),
    }


def lag_text(lag: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{name} {lag[name]['p99'] or 0:.1f}" for name in ("clients", "fake"))


def target_text(key: str, targets: dict[str, float]) -> str:
    """How the table shows a target: ``p99 < 10``, ``all``, ``>= 99%``, ``0``."""
    if key not in targets:
        return ""
    limit = targets[key]
    if key.endswith("_p99_ms"):
        return f"p99 < {limit:g}"
    if key.endswith("_share"):
        return "all" if limit == 1 else f">= {limit:.0%}"
    if key in ("errors", "left_streaming"):
        return f"{limit:g}"
    return f"< {limit:g}"


def print_table(results: dict[str, Any]) -> None:
    o = results["options"]
    relay, met, targets = results["relay"], results["met"], results["targets"]
    pace = f"{o['rate']:g} tok/s" if o["rate"] else "full speed"
    nth = o["abort_every"]
    every = (
        "every" if nth == 1 else f"every {nth}{'nd' if nth == 2 else 'rd' if nth == 3 else 'th'}"
    )
    abort_text = f"{every} client after {o['abort_after']} tokens"
    if o["abort_share"] is not None:
        abort_text = f"{o['abort_share']:.0%} of the replies after {o['abort_after']} tokens"
    aborting = o["abort_every"] or o["abort_share"]
    instances = f"{o['instances']} instance{'s' if o['instances'] > 1 else ''}, {o['bus']} bus"
    shape = (
        f"burst of {o['clients']} clients x {o['messages']} messages (one chat each)"
        if o["burst"]
        else f"{o['clients']} clients"
    )
    print(
        f"chatsvc relay: {shape} x {o['tokens']} tokens at "
        f"{pace}, {o['db']}, {instances}, "
        f"{o['users']} users, "
        f"{'no deflate' if o['no_deflate'] else 'permessage-deflate'}; aborts: "
        f"{abort_text if aborting else 'none'}"
    )
    if o["burst"]:
        print(
            f"window {relay['window_s']} s from the burst to the last client's end; "
            f"{relay['replies']} replies in the run; MAX_CONCURRENT_GENERATIONS "
            f"{relay['user_cap']}"
        )
    else:
        print(
            f"window {relay['window_s']} s after a {o['ramp']} s ramp; {relay['replies']} "
            "replies in the run"
        )
    print(f"{'figure':<30}{'p50':>9}{'p99':>9}{'max':>9}  {'target':<13}met")

    def mark(key: str) -> str:
        return {True: "yes", False: "NO", None: "-"}[met[key]]

    def goal(key: str) -> str:
        return target_text(key, targets)

    def row(label: str, spread_ms: dict[str, Any], target: str = "", key: str | None = None):
        cells = "".join(
            f"{'-' if spread_ms[q] is None else f'{spread_ms[q]:.1f}':>9}"
            for q in ("p50", "p99", "max")
        )
        print(f"{label:<30}{cells}  {target:<13}{mark(key) if key else ''}".rstrip())

    offered = relay["offered_tokens_per_s"]
    offered = f"{offered:g}" if offered else "as fast as it goes"
    print(
        f"{'tokens/s delivered':<30}{relay['tokens_per_s']:>9.1f}"
        f"   ({relay['tokens']} tokens; offered {offered})"
    )
    row("relay latency ms", relay["relay_ms"], goal("relay_p99_ms"), "relay_p99_ms")
    row("send -> started ms", relay["send_started_ms"])
    row("TTFT ms (with upstream wait)", relay["ttft_ms"])
    row("TTFT net of upstream wait ms", relay["ttft_net_ms"], goal("ttft_p99_ms"), "ttft_p99_ms")
    if relay["ttft_from_first_send_ms"]["n"]:
        row("  refused first: TTFT ms", relay["ttft_from_first_send_ms"])
    row("abort -> aborted ms", relay["abort_ms"], goal("abort_p99_ms"), "abort_p99_ms")
    row("abort -> upstream closed ms", relay["upstream_close_ms"])
    if follows := relay["followers"]:
        print_follows(follows, row)
    share = relay["upstream_closed_share"]
    print(
        f"{'aborts closing the upstream':<30}"
        f"{relay['upstream_closed']:>9}/{relay['aborts_answered']:<8}"
        f"{'' if share is None else f'{share:.0%}':>9}  {goal('upstream_closed_share'):<13}"
        f"{mark('upstream_closed_share')}   (upstream had sent all: "
        f"{relay['upstream_finished_first']}; late, answered by done: {relay['aborts_late']})"
    )
    if o["burst"]:
        landed = relay["abort_landed_share"]
        asked = relay["aborts_answered"] + relay["aborts_late"]
        print(
            f"{'aborts landing (aborted)':<30}{relay['aborts_answered']:>9}/{asked:<8}"
            f"{'' if landed is None else f'{landed:.1%}':>9}  "
            f"{goal('abort_landed_share'):<13}{mark('abort_landed_share')}   "
            "(judged flat out only; the others were answered by done)"
        )
        if relay["late_reply_ms"]["n"]:
            row("  late: first token -> done ms", relay["late_reply_ms"])
    detail = relay["error_detail"]
    print(
        f"{'errors (not refusals)':<30}{relay['errors']:>9}{'':18}  {goal('errors'):<13}"
        f"{mark('errors')}   (frames {detail['error_frames']}, lost {detail['lost']}, "
        f"short {detail['short']}, clients {detail['client_failures']})"
    )
    for example in detail["examples"]:
        print(f"    {example}")
    print(f"{'error frames by code':<30}{codes_text(relay['error_codes'])}")
    refusals = relay["refusals"]
    print(
        f"{'refused sends':<30}{refusals['frames']:>9}   "
        f"({refusals['replies_refused_at_least_once']} replies refused at least once, "
        f"{refusals['resends']} resends, {refusals['replies_given_up']} given up after "
        f"{MAX_RESENDS} resends)"
    )
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(relay["reply_statuses"].items()))
    print(
        f"{'replies left streaming':<30}{relay['left_streaming']:>9}{'':18}  "
        f"{goal('left_streaming'):<13}{mark('left_streaming')}   "
        f"(when the clients ended: {relay['streaming_at_end']}, waited "
        f"{relay['streaming_settle_s']} s; replies in the database: {statuses or 'none'})"
    )
    cpu = relay["server_cpu_s_per_1k_tokens"]
    shares = relay["server_cpu_share_by_instance"]
    each = f": {', '.join(f'{n} {v:.0%}' for n, v in shares.items())}" if len(shares) > 1 else ""
    print(
        f"{'server CPU s / 1k tokens':<30}{'-' if cpu is None else f'{cpu:.3f}':>9}"
        f"{'':18}  {goal('server_cpu_s_per_1k_tokens'):<13}"
        f"{mark('server_cpu_s_per_1k_tokens')}   "
        f"(server busy {relay['server_cpu_share']:.0%} of a core{each})"
    )
    if relay["followers"]:
        print(
            f"{'  per 1k delivered tokens':<30}{relay['server_cpu_s_per_1k_delivered']:>9.3f}"
            "   (senders' and followers' tokens)"
        )
    if slow := relay["slow_readers"]:
        print_slow(slow)
    print(
        f"{'load generator CPU':<30}clients {relay['generator_cpu_share']:.0%}, "
        f"fake upstream {relay['fake_cpu_share']:.0%} of a core"
    )
    services = relay["service_cpu_share"]
    print(
        f"{'machine CPU':<30}{relay['machine_cpu_share']:.0%} of a core "
        f"({os.cpu_count()} cores): PostgreSQL {services['postgres']:.0%}, "
        f"Redis {services['redis-server']:.0%}, interrupts {services['interrupts']:.0%}, "
        f"other processes {relay['other_cpu_share']:.0%}"
    )
    print(f"{'generator loop lag p99 ms':<30}{lag_text(relay['loop_lag_ms'])}")
    if relay["server_log_errors"] or relay["server_log_missing_snapshots"]:
        print(
            f"{'server log':<30}{relay['server_log_errors']} errors, "
            f"{relay['server_log_missing_snapshots']} 'no snapshot' warnings"
        )
    if ceiling := results.get("ceiling"):
        lat = ceiling["latency_ms"]
        print(
            f"SDK ceiling ({o['clients']} openai.AsyncOpenAI streams, no server): "
            f"{ceiling['tokens_per_s']:.1f} tokens/s, latency p50 {lat['p50']} ms, "
            f"p99 {lat['p99']} ms, max {lat['max']} ms, errors {ceiling['errors']}"
        )
        print(
            f"    SDK client CPU {ceiling['client_cpu_s_per_1k_tokens']} s / 1k tokens "
            f"(busy {ceiling['client_cpu_share']:.0%} of a core; "
            f"fake upstream {ceiling['fake_cpu_share']:.0%}; loop lag p99 "
            f"{lag_text(ceiling['loop_lag_ms'])})"
        )


def codes_text(codes: dict[str, int]) -> str:
    """``internal 3, overloaded 40 (refusal)``: every error frame the senders got, by code."""
    if not codes:
        return "none"

    def kind(code: str) -> str:
        if code in REFUSALS:
            return " (refusal)"
        return " (late abort)" if code == "not_running" else ""

    return ", ".join(f"{code} {n}{kind(code)}" for code, n in codes.items())


def print_follows(follows: dict[str, Any], row: Any) -> None:
    print(
        f"{'followers: tokens/s':<30}{follows['tokens_per_s']:>9.1f}"
        f"   ({follows['tokens']} tokens; their senders got {follows['senders_tokens_per_s']:g}/s)"
    )
    row("  relay latency ms", follows["relay_ms"])
    row("  subscribe -> snapshot ms", follows["snapshot_ms"])
    print(
        f"{'  follows':<30}{follows['follows']:>9}   checked {follows['checked']}, "
        f"mismatches {follows['mismatches']}, with gaps {follows['with_gaps']}, "
        f"early tokens {follows['with_early_tokens']}, lost {follows['lost']}, "
        f"error frames {follows['error_frames']}; ended before the subscription: "
        f"{follows['terminal_only']} (terminal only), {follows['missed']} (nothing)"
    )
    for example in follows["examples"]:
        print(f"    {example}")


def print_slow(slow: dict[str, Any]) -> None:
    closed = ", ".join(f"{n} {c}" for n, c in slow["closed_by_server"].items())
    print(
        f"{'slow readers':<30}{slow['sockets']:>9}   close codes {slow['close_codes']}; "
        f"closed by the servers (1013): {closed}; {slow['subscribes_sent']} subscribes, "
        f"{slow['stuck']} stuck writing, {slow['drained_frames']} frames drained at the end"
    )
    if slow["closed_at_s"]:
        print(f"    closed at (s after the ramp): {slow['closed_at_s']}")
    for error in slow["errors"][:3]:
        print(f"    {error}")


# --- server ----------------------------------------------------------------------------


async def create_postgres_database() -> Database:
    name = f"chatsvc_test_bench_{os.getpid()}_{int(time.time())}"  # CI sweeps chatsvc_test_*
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return Database("postgres", f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}")


async def drop_postgres_database(db: Database) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(
            f'DROP DATABASE IF EXISTS "{db.url.rsplit("/", 1)[1]}" WITH (FORCE)'
        )
    finally:
        await connection.close()


#: ``python -c`` program: ``chatsvc ARGS`` under cProfile, timing the main thread's CPU (the
#: event loop; not the SQLite threads, not time spent waiting), written to ``argv[1]`` at exit.
PROFILED_SERVE = """
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
profiler = cProfile.Profile(time.thread_time)
profiler.enable()
try:
    runpy.run_module("chatsvc", run_name="__main__", alter_sys=True)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def bus_url(options: argparse.Namespace, db: Database) -> str | None:
    """``EVENT_BUS_URL`` for ``--bus``: NOTIFY goes through the benchmark's own database."""
    if options.bus == "redis":
        return REDIS_URL
    if options.bus == "postgres":
        return db.url if db.engine == "postgres" else PG_ADMIN_URL
    return None


def start_servers(
    db: Database, tmp: Path, options: argparse.Namespace, settings: dict[str, str]
) -> list[Server]:
    """``--instances`` servers on ``db``; instance A runs under cProfile with ``--profile``."""
    servers: list[Server] = []
    try:
        for number in range(options.instances):
            if options.profile and number == 0:
                profiled = ("-c", PROFILED_SERVE, str(options.profile.resolve()))
                servers.append(start_server(db, tmp, python_args=profiled, **settings))
            else:
                servers.append(start_server(db, tmp, fresh_interpreter=True, **settings))
    except BaseException:
        stop_servers(servers, options)
        raise
    return servers


def stop_servers(servers: list[Server], options: argparse.Namespace) -> None:
    for number, server in enumerate(servers):
        if options.profile and number == 0:
            # uvicorn re-raises SIGTERM after its shutdown, which would kill cProfile
            # before it writes; after SIGINT the KeyboardInterrupt lets it write.
            server.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=30)
        server.stop()


def user_cap(options: argparse.Namespace) -> int:
    """``MAX_CONCURRENT_GENERATIONS``: ``--user-cap``; else, in burst mode, one more than a
    user's clients (the cap does not refuse), and 1000 (the most) in the other modes."""
    if options.user_cap is not None:
        return options.user_cap
    if options.burst:
        return min(1000, math.ceil(options.clients / options.users) + 1)
    return 1000


def make_database(options: argparse.Namespace, tmp: Path) -> Database:
    if options.db == "postgres":
        return asyncio.run(create_postgres_database())
    return Database("sqlite", f"sqlite:///{tmp}/bench.db")


def run_against_server(
    fake: FakeUpstream, options: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    db = make_database(options, tmp)
    settings = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "x",
        "LLM_MAX_RETRIES": "0",
        "MAX_CONCURRENT_GENERATIONS": str(user_cap(options)),
    }
    if (url := bus_url(options, db)) is not None:
        settings["EVENT_BUS_URL"] = url
    try:
        servers = start_servers(db, tmp, options, settings)
        try:
            users = [register_and_login(servers[0]) for _ in range(options.users)]
            relay = asyncio.run(measure_relay(servers, users, fake, options))
        finally:
            stop_servers(servers, options)
    finally:
        if db.engine == "postgres":
            asyncio.run(drop_postgres_database(db))
    logs = [server.log() for server in servers]
    if options.server_log:
        named = zip(INSTANCE_NAMES, logs, strict=False)
        text = logs[0] if len(logs) == 1 else "".join(f"=== {n} ===\n{t}" for n, t in named)
        options.server_log.write_text(text)
    relay["server_log_errors"] = sum(log.count(" ERROR ") + log.count("Traceback") for log in logs)
    relay["server_log_missing_snapshots"] = sum(log.count("no snapshot of chat") for log in logs)
    relay["user_cap"] = user_cap(options)
    return relay


# --- idle sockets ------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """A process's resident set (``VmRSS``), in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def settled_rss_kb(pid: int) -> tuple[int, float]:
    """The server's RSS once it has held within 1 MB for ``RSS_SETTLE_SECONDS`` (or after
    ``RSS_SETTLE_LIMIT_SECONDS``): (KB, seconds waited)."""
    began = time.monotonic()
    samples = [(began, rss_kb(pid))]
    while time.monotonic() - began < RSS_SETTLE_LIMIT_SECONDS:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        samples.append((now, rss_kb(pid)))
        recent = [kb for at, kb in samples if now - at <= RSS_SETTLE_SECONDS]
        if now - began >= RSS_SETTLE_SECONDS and max(recent) - min(recent) < 1024:
            break
    return samples[-1][1], round(time.monotonic() - began, 1)


async def open_sockets(
    urls: list[str], options: argparse.Namespace, failures: list[str]
) -> list[ClientConnection]:
    """Open a WebSocket to each URL and read its ``ready``, ``IDLE_BATCH`` at a time."""

    async def open_one(url: str) -> ClientConnection | None:
        try:
            socket = await connect(
                url,
                max_size=None,
                open_timeout=60,
                compression=None if options.no_deflate else "deflate",
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            failures.append(f"connect: {type(exc).__name__}: {exc}")
            return None
        try:
            await expect_ready(socket)
        except (OSError, TimeoutError, RuntimeError, WebSocketException) as exc:
            failures.append(f"ready: {type(exc).__name__}: {exc}")
            await socket.close()
            return None
        return socket

    sockets: list[ClientConnection] = []
    for start in range(0, len(urls), IDLE_BATCH):
        opened = await asyncio.gather(*map(open_one, urls[start : start + IDLE_BATCH]))
        sockets.extend(socket for socket in opened if socket is not None)
    return sockets


async def measure_idle(
    server: Server, users: list[User], options: argparse.Namespace
) -> dict[str, Any]:
    """The server's RSS before and after ``--idle-sockets`` authenticated sockets open."""
    pid = server.process.pid
    urls = [f"{server.ws_url}?token={users[user].token}" for user in range(len(users))]
    failures: list[str] = []
    # Warm-up: a first socket per user imports and caches what any socket needs.
    for socket in await open_sockets(urls, options, failures):
        await socket.close()
    before_kb, before_wait = await settled_rss_kb(pid)
    began = time.monotonic()
    wanted = [urls[index % len(urls)] for index in range(options.idle_sockets)]
    sockets = await open_sockets(wanted, options, failures)
    open_s = time.monotonic() - began
    try:
        after_kb, after_wait = await settled_rss_kb(pid)
        async with httpx.AsyncClient(timeout=10) as http:
            found = OPEN_SOCKETS.search((await http.get(f"{server.url}/metrics")).text)
        server_open = int(float(found.group(1))) if found else None
    finally:
        for start in range(0, len(sockets), IDLE_BATCH):
            await asyncio.gather(*(s.close() for s in sockets[start : start + IDLE_BATCH]))
    added_kb = after_kb - before_kb
    return {
        "sockets_wanted": options.idle_sockets,
        "sockets_open": len(sockets),
        "server_says_open": server_open,
        "open_s": round(open_s, 1),
        "rss_before_mb": round(before_kb / 1024, 1),
        "rss_after_mb": round(after_kb / 1024, 1),
        "settle_s": [before_wait, after_wait],
        "added_mb": round(added_kb / 1024, 1),
        "kb_per_socket": round(added_kb / len(sockets), 1) if sockets else None,
        "target_mb": IDLE_TARGET_MB,
        "met": (added_kb / 1024 < IDLE_TARGET_MB) if len(sockets) >= 5000 else None,
        "failures": len(failures),
        "failure_examples": failures[:3],
    }


def run_idle(options: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``--idle-sockets``: one server (no upstream is called), ``--users`` users."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)  # the kernel's usual nr_open
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    per_user = math.ceil(options.idle_sockets / options.users) + 1
    if per_user > MAX_SOCKETS_PER_USER_LIMIT:
        raise SystemExit(
            f"{per_user} sockets per user is over MAX_SOCKETS_PER_USER's limit "
            f"({MAX_SOCKETS_PER_USER_LIMIT}): use more --users"
        )
    db = make_database(options, tmp)
    settings = {
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never called
        "OPENAI_API_KEY": "x",
        "MAX_SOCKETS_PER_USER": str(per_user),
    }
    try:
        server = start_server(db, tmp, fresh_interpreter=True, **settings)
        try:
            users = [register_and_login(server) for _ in range(options.users)]
            idle = asyncio.run(measure_idle(server, users, options))
        finally:
            server.stop()
    finally:
        if db.engine == "postgres":
            asyncio.run(drop_postgres_database(db))
    log = server.log()
    idle["server_log_errors"] = log.count(" ERROR ") + log.count("Traceback")
    idle["rlimit_nofile"] = {"was": soft, "now": hard}
    return idle


def print_idle(idle: dict[str, Any], options: argparse.Namespace) -> None:
    met = {True: "yes", False: "NO", None: "-"}[idle["met"]]
    print(
        f"chatsvc idle sockets: {idle['sockets_open']} of {idle['sockets_wanted']} authenticated "
        f"WebSockets open ({options.users} users, {options.db}, "
        f"{'no deflate' if options.no_deflate else 'permessage-deflate offered'}), "
        f"opened in {idle['open_s']} s; the server counts {idle['server_says_open']} open"
    )
    print(
        f"server RSS {idle['rss_before_mb']} MB -> {idle['rss_after_mb']} MB "
        f"(settled after {idle['settle_s'][0]} s / {idle['settle_s'][1]} s)"
    )
    print(
        f"added: {idle['added_mb']} MB, {idle['kb_per_socket']} KB per socket; "
        f"target < {idle['target_mb']:g} MB for 5,000: {met}"
    )
    print(
        f"failures: {idle['failures']}; server log errors: {idle['server_log_errors']}; "
        f"RLIMIT_NOFILE {idle['rlimit_nofile']['was']} -> {idle['rlimit_nofile']['now']}"
    )
    for example in idle["failure_examples"]:
        print(f"    {example}")


# --- main --------------------------------------------------------------------------------


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=200, help="concurrent WebSockets")
    parser.add_argument("--rate", type=float, default=10, help="tokens/s per reply; 0: flat out")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per reply")
    parser.add_argument("--users", type=int, default=2, help="users the clients share")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to open the clients")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument(
        "--abort-every", type=int, default=4, help="every Nth client aborts; 0: none"
    )
    parser.add_argument("--abort-after", type=int, default=10, help="tokens before the abort")
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the SDK ceiling run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--server-log", type=Path, help="keep the server's log in this file")
    parser.add_argument(
        "--db", choices=("sqlite", "postgres"), default="sqlite", help="the server's database"
    )
    parser.add_argument(
        "--profile", type=Path, help="run the server (A) under cProfile, writing this file"
    )
    parser.add_argument(
        "--instances", type=int, choices=(1, 2), default=1, help="servers on the same database"
    )
    parser.add_argument(
        "--bus",
        choices=("memory", "redis", "postgres"),
        default="memory",
        help="EVENT_BUS_URL: none (in-memory), Redis pub/sub or PostgreSQL LISTEN/NOTIFY",
    )
    parser.add_argument(
        "--followers",
        action=argparse.BooleanOptionalAction,
        help="clients 2 and 3 of every 4 have a second socket, on the other instance, that "
        "follows their replies (default: on with 2 instances)",
    )
    parser.add_argument(
        "--slow-readers", type=int, default=0, help="sockets that follow chats and never read"
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="every client connects first, then all send at one instant; --messages in one "
        "chat each; the window is the whole run (--ramp and --duration are not used)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        help="messages per client, in one chat; only with --burst, where unset means 3",
    )
    parser.add_argument(
        "--abort-share",
        type=float,
        help="with --burst: abort this share of the replies (0.3: 30%%), spread evenly over "
        "clients and messages; instead of --abort-every",
    )
    parser.add_argument(
        "--user-cap",
        type=int,
        help="MAX_CONCURRENT_GENERATIONS (default: with --burst one more than a user's "
        "clients, else 1000)",
    )
    parser.add_argument(
        "--idle-sockets",
        type=int,
        default=0,
        help="instead of a load run: the server's RSS added by this many idle authenticated "
        "WebSockets, spread over --users",
    )
    options = parser.parse_args()
    if options.messages is not None and not options.burst:
        parser.error("--messages needs --burst")
    if options.abort_share is not None and not options.burst:
        parser.error("--abort-share needs --burst (without it, use --abort-every)")
    if options.abort_share is not None and not 0 <= options.abort_share <= 1:
        parser.error("--abort-share is a share: 0 to 1")
    if options.burst and options.slow_readers:
        parser.error("--slow-readers needs the timed window: not with --burst")
    if options.messages is None:
        options.messages = 3 if options.burst else 1
    if options.messages < 1 or options.clients < 1 or options.users < 1:
        parser.error("--messages, --clients and --users are at least 1")
    if options.user_cap is not None and not 1 <= options.user_cap <= 1000:
        parser.error("--user-cap is 1 to 1000 (MAX_CONCURRENT_GENERATIONS' range)")
    if options.idle_sockets < 0:
        parser.error("--idle-sockets is a number of sockets")
    if options.instances > 1 and options.bus == "memory":
        parser.error("--instances 2 needs a shared bus: --bus redis or --bus postgres")
    if options.instances > 1 and options.db != "postgres":
        # Two processes on one SQLite file queue for its write lock: at 200 clients x 10/s,
        # writes waited past the server's write timeout and replies were lost.
        parser.error("--instances 2 needs --db postgres (SQLite's one write lock does not scale)")
    if options.followers is None:
        options.followers = options.instances > 1
    return options


def main() -> None:
    options = parse_options()
    if options.idle_sockets:
        with tempfile.TemporaryDirectory() as tmp:
            idle = run_idle(options, Path(tmp))
        if options.json:
            print(
                json.dumps(
                    {"options": {**vars(options), "server_log": "", "profile": ""}, "idle": idle},
                    indent=2,
                )
            )
        else:
            print_idle(idle, options)
        return
    fake = FakeUpstream()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            relay = run_against_server(fake, options, Path(tmp))
        ceiling = None if options.no_ceiling else asyncio.run(measure_ceiling(fake, options))
    finally:
        fake.stop()
    results = {
        "options": {
            **vars(options),
            "server_log": str(options.server_log or ""),
            "profile": str(options.profile or ""),
        },
        "relay": relay,
        "ceiling": ceiling,
        "targets": targets_for(options),
        "met": verdicts(relay, options),
    }
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
