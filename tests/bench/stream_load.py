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
runs the server under cProfile (main-thread CPU time; inspect with ``pstats``),
``--db postgres`` uses a fresh PostgreSQL database (``CHATSVC_TEST_POSTGRES_URL``).
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import openai
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

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
    task_id: str | None = None
    first_token_at: float | None = None
    first_stamp: float | None = None  # the upstream's send time of the first token
    tokens: int = 0
    abort_sent_at: float | None = None
    end: str | None = None  # done, aborted, error, lost
    ended_at: float | None = None
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


def cpu_seconds(stat_path: str) -> float:
    """utime + stime from a ``/proc/.../stat`` file (a process, or one thread of it)."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def cpu_snapshot(server_pid: int | None, fake: FakeUpstream) -> dict[str, float]:
    times = os.times()
    snapshot = {
        "generator": times.user + times.system,
        "fake": cpu_seconds(f"/proc/{fake.pid}/stat"),
        "at": time.time(),
    }
    if server_pid is not None:
        snapshot["server"] = cpu_seconds(f"/proc/{server_pid}/stat")
    return snapshot


async def probe_cpu(run: Run, server_pid: int | None, fake: FakeUpstream) -> None:
    """Read the CPU counters at both ends of the window (and use the actual read times)."""
    await asyncio.sleep(max(0.0, run.window_start - time.time()))
    before = cpu_snapshot(server_pid, fake)
    await asyncio.sleep(max(0.0, run.window_end - time.time()))
    after = cpu_snapshot(server_pid, fake)
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
            async with asyncio.timeout(IDLE_SECONDS):
                ready = json.loads(await socket.recv())
            if ready.get("type") != "ready":
                raise RuntimeError(f"first frame was {ready}")
            count = 0
            while time.time() < run.window_end:
                stream = Stream(f"bench-{index}-{count}", time.time())
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
            stream.task_id = frame["task_id"]
        elif kind in ("done", "aborted", "error"):
            if frame.get("task_id") not in (None, stream.task_id):
                run.stray_frames.append(frame)  # e.g. an abort that came after its `done`
                continue
            stream.end, stream.ended_at = kind, received
            if kind == "error":
                stream.error = f"{frame.get('code')}: {frame.get('message')}"
            return


async def measure_relay(
    server: Server, users: list[User], fake: FakeUpstream, options: argparse.Namespace
) -> dict[str, Any]:
    run = Run.begin(options)
    clients = [
        client(index, f"{server.ws_url}?token={users[index % len(users)].token}", run)
        for index in range(options.clients)
    ]
    await gather_with_lag(run, fake, probe_cpu(run, server.process.pid, fake), *clients)
    records = await wait_for_hangups(fake, run)
    return summarize_relay(run, records)


async def gather_with_lag(run: Run, fake: FakeUpstream, *work: Awaitable[None]) -> None:
    """Run ``work`` while probing the lag of this event loop and of the fake's."""
    watcher = asyncio.create_task(watch_lag(run.lag))
    try:
        await asyncio.gather(*work)
    finally:
        watcher.cancel()
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
        await gather_with_lag(run, fake, probe_cpu(run, None, fake), *clients)
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
    errors = len(error_frames) + len(lost) + len(short) + len(run.failures)
    examples = [f"{s.marker}: {s.error}" for s in error_frames[:3]] + run.failures[:3]
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
            "stray_frames": len(run.stray_frames),
            "examples": examples,
        },
        "server_cpu_s": round(run.cpu["server"], 2),
        "server_cpu_s_per_1k_tokens": per_1k(run.cpu["server"], tokens),
        "server_cpu_share": round(run.cpu["server"] / window, 3),
        "generator_cpu_share": round(run.cpu["generator"] / window, 3),
        "fake_cpu_share": round(run.cpu["fake"] / window, 3),
        "loop_lag_ms": loop_lag(run),
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
    print(
        f"chatsvc relay: {o['clients']} clients x {o['tokens']} tokens at "
        f"{pace}, {o['db']}, "
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
    print(
        f"{'server CPU s / 1k tokens':<30}{'-' if cpu is None else f'{cpu:.3f}':>9}"
        f"{'':18}  {'< 0.2':<13}{mark('server_cpu_s_per_1k_tokens')}   "
        f"(server busy {relay['server_cpu_share']:.0%} of a core)"
    )
    print(
        f"{'load generator CPU':<30}clients {relay['generator_cpu_share']:.0%}, "
        f"fake upstream {relay['fake_cpu_share']:.0%} of a core"
    )
    print(f"{'generator loop lag p99 ms':<30}{lag_text(relay['loop_lag_ms'])}")
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
    try:
        if options.profile:
            profiled = ("-c", PROFILED_SERVE, str(options.profile.resolve()))
            server = start_server(db, tmp, python_args=profiled, **settings)
        else:
            server = start_server(db, tmp, **settings)
        try:
            users = [register_and_login(server) for _ in range(options.users)]
            relay = asyncio.run(measure_relay(server, users, fake, options))
        finally:
            if options.profile:
                # uvicorn re-raises SIGTERM after its shutdown, which would kill cProfile
                # before it writes; after SIGINT the KeyboardInterrupt lets it write.
                server.process.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(timeout=30)
            server.stop()
    finally:
        if db.engine == "postgres":
            asyncio.run(drop_postgres_database(db))
    log = server.log()
    if options.server_log:
        options.server_log.write_text(log)
    relay["server_log_errors"] = log.count(" ERROR ") + log.count("Traceback")
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
        "--profile", type=Path, help="run the server under cProfile, writing this file"
    )
    return parser.parse_args()


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
