"""PostgreSQL goes away and comes back: clear errors meanwhile, recovery on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import Database, register_and_login, start_server
from tests.support.http import tls
from tests.tcp_proxy import TcpProxy


@pytest.mark.postgres_only
def test_requests_fail_clearly_while_the_database_is_down_and_recover(
    engine: str, make_database: Callable[..., Database], tmp_path: Path
) -> None:
    db = make_database(engine)
    target = urlsplit(db.url)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        proxied = Database(engine, db.url.replace(f":{target.port}/", f":{proxy.port}/"))
        server = start_server(proxied, tmp_path)
        try:
            user = register_and_login(server)
            with user.client() as client:
                assert client.post("/api/chats", json={"title": "before"}).status_code == 201

                proxy.down()
                listing = client.get("/api/chats")
                creating = client.post("/api/chats", json={"title": "during"})
                ready = httpx.get(f"{server.url}/health/ready", timeout=10, verify=tls())
                alive = httpx.get(f"{server.url}/health", timeout=10, verify=tls())
                assert listing.status_code == 503, listing.text
                assert listing.json()["code"] == "unavailable"
                assert "Retry-After" in listing.headers
                assert creating.status_code == 503
                assert ready.status_code == 503
                assert ready.json()["database"] == "unavailable"
                assert alive.status_code == 200  # liveness does not depend on the database

                proxy.up()
                deadline = time.monotonic() + 20
                while True:
                    listing = client.get("/api/chats")
                    if listing.status_code == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert listing.status_code == 200, listing.text
                titles = [c["title"] for c in listing.json()["items"]]
                assert titles == ["before"]  # nothing half-written from the outage
                assert client.post("/api/chats", json={"title": "after"}).status_code == 201
            assert (
                httpx.get(f"{server.url}/health/ready", timeout=10, verify=tls()).status_code == 200
            )
            assert "database unavailable" in server.log()
        finally:
            server.stop()
