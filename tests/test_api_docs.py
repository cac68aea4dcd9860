"""``/docs`` (Swagger UI) and ``/redoc`` render in a real browser from this server alone,
under a Content-Security-Policy that keeps other hosts' scripts off the origin that
holds the web client's token (issue 12, point 4)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser import screenshot
from tests.support import Server
from tests.support.http import tls


class OfflinePage:
    """A page whose requests to any host but the server's are blocked, and recorded;
    so are the Content-Security-Policy violations the browser reports."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.set_default_timeout(30_000)
        self.elsewhere: list[str] = []
        self.violations: list[str] = []
        self.context.route("**/*", self._only_the_server)
        self.page: Page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.violations.append(f"pageerror: {error}"))

    def _only_the_server(self, route: Route) -> None:
        if route.request.url.startswith(self.server.url + "/"):
            route.continue_()
        else:
            self.elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)


@pytest.fixture
def offline(browser: Browser, server: Server) -> Iterator[OfflinePage]:
    opened = OfflinePage(browser, server)
    yield opened
    opened.context.close()


def operations(server: Server) -> list[dict[str, Any]]:
    schema = httpx.get(f"{server.url}/schema/openapi.json", timeout=30, verify=tls()).json()
    found = [
        operation
        for item in schema["paths"].values()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(found) >= 10, found
    return found


def test_swagger_ui_renders_every_operation_offline(offline: OfflinePage, server: Server) -> None:
    expected = operations(server)
    response = offline.page.goto(f"{server.url}/docs")
    assert response is not None
    assert response.status == 200

    blocks = offline.page.locator("#swagger-ui .opblock")
    expect(blocks).to_have_count(len(expected))
    for operation in expected:
        summary = offline.page.locator(".opblock-summary-description")
        expect(summary.get_by_text(operation["summary"], exact=True)).to_have_count(1)
    screenshot(offline.page, "api-docs-swagger")
    assert offline.elsewhere == []
    assert offline.violations == []
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in [d.strip() for d in policy.split(";")], policy
    assert "unsafe-inline" not in policy, policy
    assert "unsafe-eval" not in policy, policy


def test_redoc_renders_every_operation_offline(offline: OfflinePage, server: Server) -> None:
    expected = operations(server)
    response = offline.page.goto(f"{server.url}/redoc")
    assert response is not None
    assert response.status == 200

    for index, operation in enumerate(expected):
        anchor = offline.page.locator(f'a[href$="/operation/{operation["operationId"]}"]')
        heading = offline.page.locator("h2", has=anchor)
        # ReDoc renders every operation at once, once it has read the schema: on a busy
        # machine (the suite's other workers) that can take longer than expect's 5 s.
        expect(heading).to_have_count(1, timeout=30_000 if index == 0 else 5_000)
        expect(heading).to_contain_text(operation["summary"])
    screenshot(offline.page, "api-docs-redoc")
    assert offline.elsewhere == []
    # ReDoc 2 always shows its maker's logo from its CDN; the policy stops that request.
    others = [v for v in offline.violations if "cdn.redoc.ly/redoc/logo-mini.svg" not in v]
    assert others == []
    policy = response.headers["content-security-policy"]
    directives = [d.strip() for d in policy.split(";")]
    assert "script-src 'self'" in directives, policy


def test_the_pages_and_their_files_come_from_this_server(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30, verify=tls()) as client:
        pages = [client.get("/docs"), client.get("/redoc")]
        files = {
            name: client.get(f"/docs/assets/{name}")
            for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
        }
        escape = client.get("/docs/assets/..%2Fapi%2Fdocs.py")
        old_pages = [client.get("/schema/swagger"), client.get("/schema/redoc")]
    for page in pages:
        assert page.status_code == 200
        html = page.text
        # Every script is a file of this origin; no inline script, no other host.
        assert re.findall(r"<script[^>]*>", html)
        assert all(
            re.search(r'src="/docs/assets/', tag) for tag in re.findall(r"<script[^>]*>", html)
        )
        assert not re.search(r"<script[^>]*>\s*[^<\s]", html)
        assert not re.search(r"https?://|[\"'(]//", html)
    for name, response in files.items():
        assert response.status_code == 200, name
        expected = "text/css" if name.endswith(".css") else "javascript"
        assert expected in response.headers["content-type"], name
    assert escape.status_code == 404
    # Litestar's own pages, which loaded from CDNs, are not served.
    assert [page.status_code for page in old_pages] == [404, 404]
