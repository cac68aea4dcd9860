"""The REST side of the terminal client: log in, check the server, one call at a time.

Every failure becomes a one-line :class:`ClientError`; the client says it and goes on
(:class:`RequestFailed`) or ends (:class:`Unauthorized`, and the others).
"""

from __future__ import annotations

import asyncio
import os
from typing import TypeVar

import aiohttp
import msgspec

from chatsvc.terminal.screen import printable
from chatsvc.wire import AccessToken, LoginRequest

REQUEST_SECONDS = 30

T = TypeVar("T")


class ClientError(Exception):
    """Ends the client with this one-line message (exit status 1)."""


class Unauthorized(ClientError):
    """The server refused the token: nothing else will work."""


class RequestFailed(ClientError):
    """One request failed; in a session, the client says so and goes on."""


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ClientError(f"--url must start with http:// or https:// (got {url!r})")
    return url


def connection_problem(base: str, exc: BaseException) -> ClientError:
    if isinstance(exc, TimeoutError):
        return RequestFailed(f"{base} did not answer in time")
    reason = str(exc)
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        reason = os.strerror(os_error.errno) if os_error.errno else str(os_error)
    return RequestFailed(f"cannot reach {base} (is the server running?): {reason}")


def _error_text(status: int, body: bytes) -> str:
    try:
        detail = msgspec.json.decode(body).get("detail")
    except (msgspec.DecodeError, AttributeError):
        detail = None
    return f"{printable(str(detail)) if detail else 'the server answered'} (HTTP {status})"


class Api:
    """The REST calls of the client; every failure is a one-line :class:`ClientError`."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.http = http
        self.base = base
        self.token = token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(
        self,
        method: str,
        path: str,
        answer: type[T],
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, str | int] | None = None,
    ) -> T:
        headers = dict(self.auth)
        data = None
        if body is not None:
            data = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        try:
            async with self.http.request(
                method,
                self.base + path,
                data=data,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
            ) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_problem(self.base, exc) from None
        if status == 401:
            raise Unauthorized(
                "the server refused the token (expired or invalid): "
                "run `chatsvc chat` again to log in"
            )
        if status >= 400:
            raise RequestFailed(_error_text(status, payload))
        try:
            return msgspec.json.decode(payload, type=answer)
        except msgspec.DecodeError as exc:
            raise RequestFailed(f"unexpected answer from {self.base}{path}: {exc}") from None


class _Health(msgspec.Struct):
    status: str | None = None


async def _probe(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(
                base + "/health", timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS)
            ) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_problem(base, exc) from None
    try:
        healthy = status == 200 and msgspec.json.decode(body, type=_Health).status == "ok"
    except msgspec.DecodeError:  # and ValidationError
        healthy = False
    if not healthy:
        raise ClientError(f"no chatsvc server at {base} (GET /health answered {status})")


def check_server(url: str) -> None:
    """Fail with one line when nothing (or not chatsvc) answers at ``url``."""
    asyncio.run(_probe(url))


async def _login(base: str, username: str, password: str) -> str:
    if not username:
        raise ClientError("no username given")
    if not password:
        raise ClientError("no password given")
    async with aiohttp.ClientSession() as http:
        try:
            answer = await Api(http, base).call(
                "POST",
                "/api/auth/login",
                AccessToken,
                body=LoginRequest(username=username, password=password),
            )
        except Unauthorized:
            raise ClientError("login failed: wrong username or password") from None
        except RequestFailed as exc:
            raise ClientError(f"login failed: {exc}") from None
    return answer.access_token


def login(url: str, username: str, password: str) -> str:
    """A bearer token for these credentials, or a one-line :class:`ClientError`."""
    return asyncio.run(_login(url, username, password))
