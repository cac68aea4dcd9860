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
- errors, over the whole run: ``error`` frames, replies lost (10 s without a
  frame: that client then stops), ``done`` replies with fewer tokens than
  sent, and clients that failed (connect, closed 1013 "too slow", ...).
  Aborts answered by ``done`` (the reply finished first) are shown apart.
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

from tests.conftest import (
    PG_ADMIN_URL,
    Database,
    Server,
    User,
    register_and_login,
    start_server,
)
from tests.fake_openai import FakeOpenAI, directive

STAMP = re.compile(r"@(\d+\.\d+)")
MARKER = re.compile(r"\b(?:bench|sdk)-\d+-\d+\b")
IDLE_SECONDS = 10.0  # silence that makes a reply count as lost
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

TARGETS = {
    "relay_p99_ms": 10.0,
    "ttft_p99_ms": 100.0,
    "abort_p99_ms": 50.0,
    "upstream_closed_share": 1.0,
    "errors": 0,
    "server_cpu_s_per_1k_tokens": 0.2,
}


# --- measurement records ----------------------------------------------------------------


@dataclass
class Stream:
    """One reply as a client saw it (times are ``time.time()``)."""

    marker: str
    sent_at: float
    client: int = -1
    task_id: str | None = None
    chat_id: str | None = None
    first_token_at: float | None = None
    first_stamp: float | None = None  # the upstream's send time of the first token
    tokens: int = 0
    abort_sent_at: float | None = None
    end: str | None = None  # done, aborted, error, lost
    ended_at: float | None = None
    error: str | None = None
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

    @classmethod
    def begin(cls, options: argparse.Namespace) -> Run:
        started = time.time() + 0.2
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
    """Read the CPU counters at both ends of the window (and use the actual read times)."""
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


async def client(index: int, url: str, run: Run) -> None:
    options = run.options
    await asyncio.sleep(max(0.0, start_time(index, run) - time.time()))
    abort_after = options.abort_after if aborts(index, options) else None
    script = directive(tokens=options.tokens, rate=options.rate, timestamps=True)
    try:
        async with connect(
            url,
            max_size=None,
            open_timeout=30,
            compression=None if options.no_deflate else "deflate",
        ) as socket:
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


async def read_reply(
    socket: ClientConnection, stream: Stream, run: Run, abort_after: int | None
) -> None:
    while True:
        try:
            async with asyncio.timeout(IDLE_SECONDS):
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
            run.announce(stream)
        elif kind in ("done", "aborted", "error"):
            if frame.get("task_id") not in (None, stream.task_id):
                run.stray_frames.append(frame)  # e.g. an abort that came after its `done`
                continue
            stream.end, stream.ended_at = kind, received
            if kind == "error":
                stream.error = f"{frame.get('code')}: {frame.get('message')}"
            else:
                stream.content = frame["message"]["content"]
            return


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
    for index in range(options.clients):
        instance, user = instance_of(index, options), user_of(index, options)
        work.append(client(index, url(instance, user), run))
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
    await gather_with_lag(run, fake, *work, background=background)
    if options.slow_readers:
        await note_slow_closes(run, named)
    records = await wait_for_hangups(fake, run)
    return summarize_relay(run, records)


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
    """One stream after another, like ``client``; an abort is leaving the stream early."""
    options = run.options
    await asyncio.sleep(max(0.0, start_time(index, run) - time.time()))
    abort_after = options.abort_after if aborts(index, options) else None
    script = directive(tokens=options.tokens, rate=options.rate, timestamps=True)
    count = 0
    while time.time() < run.window_end:
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
    sdk = openai.AsyncOpenAI(base_url=fake.url, api_key="x", max_retries=0)
    try:
        clients = [sdk_client(index, sdk, run) for index in range(options.clients)]
        await gather_with_lag(run, fake, probe_cpu(run, {}, fake), *clients)
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
    lost = [s for s in run.streams if s.end == "lost"]  # a failed client's reply: in failures
    short = [s for s in run.streams if s.end == "done" and s.tokens != options.tokens]
    follows = summarize_follows(run)
    follow_errors = follows["errors"] if follows else 0
    errors = len(error_frames) + len(lost) + len(short) + len(run.failures) + follow_errors
    examples = [f"{s.marker}: {s.error}" for s in error_frames[:3]] + run.failures[:3]
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
        "abort_ms": spread(abort_latency),
        "aborts_answered": len(aborted),
        "aborts_late": len(late),
        "upstream_closed": len(closed),
        "upstream_finished_first": len(finished_first),
        "upstream_closed_share": round(len(closed) / len(aborted), 4) if aborted else None,
        "upstream_close_ms": spread(close_latency),
        "errors": errors,
        "error_detail": {
            "error_frames": len(error_frames),
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


def verdicts(relay: dict[str, Any]) -> dict[str, bool | None]:
    """Each target: met (True), missed (False) or not measured (None)."""

    def below(value: float | None, limit: float) -> bool | None:
        return None if value is None else value < limit

    return {
        "relay_p99_ms": below(relay["relay_ms"]["p99"], TARGETS["relay_p99_ms"]),
        "ttft_p99_ms": below(relay["ttft_net_ms"]["p99"], TARGETS["ttft_p99_ms"]),
        "abort_p99_ms": below(relay["abort_ms"]["p99"], TARGETS["abort_p99_ms"]),
        "upstream_closed_share": None
        if relay["upstream_closed_share"] is None
        else relay["upstream_closed_share"] >= TARGETS["upstream_closed_share"],
        "errors": relay["errors"] == TARGETS["errors"],
        "server_cpu_s_per_1k_tokens": below(
            relay["server_cpu_s_per_1k_tokens"], TARGETS["server_cpu_s_per_1k_tokens"]
        ),
    }


def lag_text(lag: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{name} {lag[name]['p99'] or 0:.1f}" for name in ("clients", "fake"))


def print_table(results: dict[str, Any]) -> None:
    o = results["options"]
    relay, met = results["relay"], results["met"]
    pace = f"{o['rate']:g} tok/s" if o["rate"] else "full speed"
    nth = o["abort_every"]
    every = (
        "every" if nth == 1 else f"every {nth}{'nd' if nth == 2 else 'rd' if nth == 3 else 'th'}"
    )
    abort_text = f"{every} client after {o['abort_after']} tokens"
    instances = f"{o['instances']} instance{'s' if o['instances'] > 1 else ''}, {o['bus']} bus"
    print(
        f"chatsvc relay: {o['clients']} clients x {o['tokens']} tokens at "
        f"{pace}, {o['db']}, {instances}, "
        f"{o['users']} users, "
        f"{'no deflate' if o['no_deflate'] else 'permessage-deflate'}; aborts: "
        f"{abort_text if o['abort_every'] else 'none'}"
    )
    print(
        f"window {relay['window_s']} s after a {o['ramp']} s ramp; {relay['replies']} replies "
        "in the run"
    )
    print(f"{'figure':<30}{'p50':>9}{'p99':>9}{'max':>9}  {'target':<13}met")

    def mark(key: str) -> str:
        return {True: "yes", False: "NO", None: "-"}[met[key]]

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
    row("relay latency ms", relay["relay_ms"], "p99 < 10", "relay_p99_ms")
    row("TTFT ms (with upstream wait)", relay["ttft_ms"])
    row("TTFT net of upstream wait ms", relay["ttft_net_ms"], "p99 < 100", "ttft_p99_ms")
    row("abort -> aborted ms", relay["abort_ms"], "p99 < 50", "abort_p99_ms")
    row("abort -> upstream closed ms", relay["upstream_close_ms"])
    if follows := relay["followers"]:
        print_follows(follows, row)
    share = relay["upstream_closed_share"]
    print(
        f"{'aborts closing the upstream':<30}"
        f"{relay['upstream_closed']:>9}/{relay['aborts_answered']:<8}"
        f"{'' if share is None else f'{share:.0%}':>9}  {'all':<13}"
        f"{mark('upstream_closed_share')}   (upstream had sent all: "
        f"{relay['upstream_finished_first']}; late, answered by done: {relay['aborts_late']})"
    )
    detail = relay["error_detail"]
    print(
        f"{'errors':<30}{relay['errors']:>9}{'':18}  {'0':<13}{mark('errors')}   "
        f"(frames {detail['error_frames']}, lost {detail['lost']}, short {detail['short']}, "
        f"clients {detail['client_failures']})"
    )
    for example in detail["examples"]:
        print(f"    {example}")
    cpu = relay["server_cpu_s_per_1k_tokens"]
    shares = relay["server_cpu_share_by_instance"]
    each = f": {', '.join(f'{n} {v:.0%}' for n, v in shares.items())}" if len(shares) > 1 else ""
    print(
        f"{'server CPU s / 1k tokens':<30}{'-' if cpu is None else f'{cpu:.3f}':>9}"
        f"{'':18}  {'< 0.2':<13}{mark('server_cpu_s_per_1k_tokens')}   "
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
                servers.append(start_server(db, tmp, **settings))
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


def run_against_server(
    fake: FakeUpstream, options: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    if options.db == "postgres":
        db = asyncio.run(create_postgres_database())
    else:
        db = Database("sqlite", f"sqlite:///{tmp}/bench.db")
    settings = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "x",
        "LLM_MAX_RETRIES": "0",
        "MAX_CONCURRENT_GENERATIONS": "1000",
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
    return relay


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
    options = parser.parse_args()
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
        "targets": TARGETS,
        "met": verdicts(relay),
    }
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
