"""The CPU a reply's upstream request costs the server: open, one token, close.

Run: ``uv run python tests/bench/upstream_request.py [--requests 600] [--rounds 3]``.
Streams one-token replies one after the other through ``OpenAIProvider`` (the SDK's
client with its aiohttp transport) from the fake OpenAI-compatible upstream, which
runs in a thread of its own, and prints the main thread's CPU per request
(``time.thread_time``): the fixed cost every reply pays before and after its tokens,
without the store, the socket or the rest of the server. Single rounds vary by about
10 % on a 2-core machine: compare several, or run the two codes in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chatsvc.providers.openai_compatible import OpenAIProvider
from chatsvc.providers.port import ChatTurn, CompletionRequest
from chatsvc.settings import load_settings
from tests.fake_openai import FakeOpenAI, Script

#: A short conversation: a system prompt and a question of some 240 characters.
REQUEST = CompletionRequest(
    model="fake-model",
    messages=[
        ChatTurn(role="system", content="You are a helpful assistant."),
        ChatTurn(role="user", content="hello there " * 20),
    ],
)
WARM_UP = 30


async def one_reply(provider: OpenAIProvider) -> None:
    async with provider.stream(REQUEST) as deltas:
        async for _ in deltas:
            pass


async def measure(requests: int, rounds: int) -> list[float]:
    fake = FakeOpenAI(Script(tokens=1)).start()
    environment = {"OPENAI_BASE_URL": f"http://127.0.0.1:{fake.port}/v1", "OPENAI_API_KEY": "k"}
    provider = OpenAIProvider(load_settings(environment, env_file=None))
    per_request: list[float] = []
    try:
        for _ in range(WARM_UP):
            await one_reply(provider)
        for number in range(rounds):
            started = time.thread_time()
            for _ in range(requests):
                await one_reply(provider)
            per_request.append((time.thread_time() - started) / requests * 1000)
            print(f"round {number}: {per_request[-1]:.3f} ms of CPU per request", flush=True)
    finally:
        await provider.aclose()
        fake.stop()
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds measured")
    options = parser.parse_args()
    figures = asyncio.run(measure(options.requests, options.rounds))
    print(f"median of {len(figures)} rounds: {statistics.median(figures):.3f} ms per request")


if __name__ == "__main__":
    main()
