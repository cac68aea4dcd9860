"""How /health latency holds up while a burst of logins hashes passwords.

Run: ``uv run python tests/bench/login_burst.py [--logins 10]`` (SQLite).
Starts a real server (as the tests do), registers one user, fires the logins at
once from threads and probes ``/health`` every 20 ms until they are done.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import PASSWORD, Database, register_and_login, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=10)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database("sqlite", f"sqlite:///{tmp}/bench.db")
        # Production's hashing cost (test servers take the fewest rounds): unset, the default.
        server = start_server(db, Path(tmp), fresh_interpreter=True, PASSWORD_HASH_ROUNDS="")
        try:
            user = register_and_login(server)
            durations: list[float] = []

            def log_in() -> None:
                started = time.perf_counter()
                response = httpx.post(
                    f"{server.url}/api/auth/login",
                    json={"username": user.username, "password": PASSWORD},
                    timeout=300,
                )
                response.raise_for_status()
                durations.append(time.perf_counter() - started)

            threads = [threading.Thread(target=log_in) for _ in range(options.logins)]
            probes: list[float] = []
            with httpx.Client(base_url=server.url) as client:
                client.get("/health")
                burst = time.perf_counter()
                for thread in threads:
                    thread.start()
                while any(t.is_alive() for t in threads):
                    started = time.perf_counter()
                    client.get("/health").raise_for_status()
                    probes.append((time.perf_counter() - started) * 1000)
                    time.sleep(0.02)
                total = time.perf_counter() - burst
        finally:
            server.stop()
    probes.sort()
    print(f"{options.logins} logins in {total:.2f} s (slowest login {max(durations):.2f} s)")
    median, p95 = statistics.median(probes), probes[int(len(probes) * 0.95) - 1]
    print(
        f"/health during the burst: {len(probes)} probes, median {median:.1f} ms, "
        f"p95 {p95:.1f} ms, max {probes[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
