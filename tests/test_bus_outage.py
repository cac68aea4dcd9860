"""The event bus going away and coming back (Redis behind a TCP proxy the test cuts):
readiness says so (`503`, `event_bus: unavailable`) while liveness and the database stay
fine, then recovers once the bus answers again (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support import Server, wait_until
from tests.support.http import tls
from tests.tcp_proxy import TcpProxy


def readiness(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/health/ready", timeout=10, verify=tls())


def test_readiness_follows_the_event_bus_down_and_up(
    spawn_server: Callable[..., Server],
) -> None:
    with TcpProxy("127.0.0.1", 6379) as proxy:
        server = spawn_server(EVENT_BUS_URL=f"redis://127.0.0.1:{proxy.port}/0")
        up = readiness(server)
        assert up.status_code == 200, up.text
        assert up.json()["event_bus"] == "ok"

        proxy.down()
        down = readiness(server)
        assert down.status_code == 503, down.text
        assert down.json()["status"] == "unavailable"
        assert down.json()["event_bus"] == "unavailable"
        assert down.json()["database"] == "ok"
        assert httpx.get(f"{server.url}/health", timeout=10, verify=tls()).status_code == 200
        wait_until(
            lambda: "readiness check failed: event bus" in server.log(),
            what="the failed check logged",
        )

        proxy.up()
        wait_until(lambda: readiness(server).status_code == 200, what="readiness back")
        assert readiness(server).json()["event_bus"] == "ok"
