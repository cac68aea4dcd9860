"""Every HTTP response refuses framing and type sniffing and sets a referrer policy:
each route of the app with each of its methods, with and without a token, plus a
404, static files and the Piccolo admin's pages and files (issue 12, point 8)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx

from tests.support import JWT_SECRET, Server, User, clean_environment

#: Prints the routes of the app ``chatsvc serve`` would build, as JSON.
_LIST_ROUTES = """
import json
from litestar.routes import ASGIRoute, HTTPRoute, WebSocketRoute
from chatsvc.app import create_app

routes = []
for route in create_app().routes:
    kind = {HTTPRoute: "http", WebSocketRoute: "websocket", ASGIRoute: "asgi"}[type(route)]
    methods = sorted(getattr(route, "methods", ()))
    routes.append({"kind": kind, "path": route.path_format, "methods": methods})
print(json.dumps(routes))
"""

#: A value for each path parameter, by name: ids that name nothing, a file that exists.
_PARAMETERS = {
    "chat_id": str(uuid.uuid4()),
    "message_id": str(uuid.uuid4()),
    "key_id": str(uuid.uuid4()),
    "share_id": str(uuid.uuid4()),
    "token": "shr_" + "A" * 43,
    "user_id": "2147483000",
    "path": "nothing-here",
}
_FILES = {"/static/{file_path}": "app.js", "/docs/assets/{file_path}": "swagger.js"}


def app_routes(server: Server) -> list[dict[str, object]]:
    env = clean_environment(
        DATABASE_URL=server.db.url, ENVIRONMENT="test", JWT_SECRET=JWT_SECRET, LOG_LEVEL="warning"
    )
    result = subprocess.run(
        [sys.executable, "-c", _LIST_ROUTES],
        cwd=server.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def urls_of(route: dict[str, object]) -> Iterator[str]:
    """The URLs that reach ``route``: a real file and a missing one for static files."""
    path = str(route["path"])
    if path in _FILES:
        yield path.replace("{file_path}", _FILES[path])
        yield path.replace("{file_path}", "missing.js")
        return
    yield re.sub(r"\{(\w+)\}", lambda m: _PARAMETERS[m.group(1)], path)


def assert_protected(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    headers = response.headers
    assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer"), where
    policies = headers.get_list("content-security-policy")
    assert len(policies) == 1, (where, policies)
    assert "frame-ancestors 'none'" in policies[0], (where, policies)


def test_every_route_answers_with_the_security_headers(server: Server, fresh_user: User) -> None:
    """With a user of its own: the walk sends every method of every route, and
    `POST /api/auth/logout-all` among them revokes that user's tokens."""
    routes = app_routes(server)
    kinds = {str(r["kind"]) for r in routes}
    assert kinds == {"http", "websocket", "asgi"}, kinds
    statuses: set[int] = set()
    checked = 0
    for token in (None, fresh_user.token):
        with server.client(token) as client:
            for route in routes:
                # A WebSocket route and the admin's mount answer plain HTTP requests too.
                methods = route["methods"] or ["GET"]
                assert isinstance(methods, list)
                for url in urls_of(route):
                    for method in methods:
                        response = client.request(method, url)
                        assert_protected(response)
                        statuses.add(response.status_code)
                        checked += 1
            assert_protected(client.get("/no/such/page"))
    # Successes, client errors and both kinds of refusal were all among the answers.
    assert {200, 400, 401, 404, 405} <= statuses, sorted(statuses)
    assert checked > 50


def test_the_admin_pages_and_files_carry_the_security_headers(server: Server) -> None:
    with server.client() as client:
        page = client.get("/admin/")
        assert page.status_code == 200
        assert_protected(page)
        files = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert files, page.text[:500]
        for url in (urljoin("/admin/", file) for file in files):
            response = client.get(url)
            assert response.status_code == 200, url
            assert_protected(response)
        for url in ("/admin", "/admin/public/login/", "/admin/api/tables/", "/admin/nothing"):
            assert_protected(client.get(url))
        refused = client.post("/admin/public/login/", json={})  # no CSRF token
        assert refused.status_code == 403
        assert_protected(refused)


def test_pages_keep_their_own_content_security_policy(server: Server) -> None:
    """The web client's and the docs' stricter policies are not replaced."""
    with server.client() as client:
        for path in ("/", "/docs", "/redoc"):
            policy = client.get(path).headers["content-security-policy"]
            assert "script-src 'self'" in policy, (path, policy)
            assert "frame-ancestors 'none'" in policy, (path, policy)
        assert client.get("/").headers["referrer-policy"] == "no-referrer"
