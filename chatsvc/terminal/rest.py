"""The REST side of the terminal client: log in, check the server, one call at a time.

Every failure becomes a one-line :class:`ClientError`; the client says it and goes on
(:class:`RequestFailed`) or ends (:class:`Unauthorized`, and the others).
"""

from __future__ import annotations

import asyncio
import os
import time
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


SESSION_ENDED = (
    "the server ended the session (expired or revoked): run `chatsvc chat` again to log in"
)
#: Renew the access token this long before it ends, at most (a third of a short lifetime).
RENEW_LEAD_SECONDS = 60.0
#: A refresh the server could not answer is tried again after this long.
RETRY_SECONDS = 5.0


class Tokens:
    """The session's tokens: an access token, and after a login the refresh token that
    renews it (``CHATSVC_TOKEN`` gives an access token alone, which cannot be renewed)."""

    def __init__(self, access: str, refresh: str | None = None, expires_in: float = 0) -> None:
        self.access = access
        self.refresh = refresh
        self.renew_at: float | None = None  # `time.monotonic()` when to renew
        if refresh is not None:
            self._plan(expires_in)

    @classmethod
    def of(cls, pair: AccessToken) -> Tokens:
        return cls(pair.access_token, pair.refresh_token, pair.expires_in)

    def take(self, pair: AccessToken) -> None:
        self.access, self.refresh = pair.access_token, pair.refresh_token
        self._plan(pair.expires_in)

    def _plan(self, expires_in: float) -> None:
        lead = min(RENEW_LEAD_SECONDS, expires_in / 3)
        self.renew_at = time.monotonic() + expires_in - lead


class Api:
    """The REST calls of the client; every failure is a one-line :class:`ClientError`.

    A refused access token is renewed once with the refresh token and the call made again.
    """

    def __init__(
        self, http: aiohttp.ClientSession, base: str, tokens: Tokens | None = None
    ) -> None:
        self.http = http
        self.base = base
        self.tokens = tokens
        self._renewing = asyncio.Lock()

    @property
    def token(self) -> str | None:
        return self.tokens.access if self.tokens else None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def renew(self, stale: str | None) -> None:
        """Exchange the refresh token for a new pair, unless the access token changed since
        ``stale`` was read. :class:`Unauthorized` when the session has ended (or cannot be
        renewed), :class:`RequestFailed` when the server did not answer."""
        tokens = self.tokens
        if tokens is None or tokens.refresh is None:
            raise Unauthorized(
                "the server refused the token (expired or invalid): "
                "run `chatsvc chat` again to log in"
            )
        async with self._renewing:
            if tokens.access != stale:
                return  # renewed meanwhile
            try:
                async with self.http.post(
                    self.base + "/api/auth/refresh",
                    json={"refresh_token": tokens.refresh},
                    timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
                ) as response:
                    status, payload = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise connection_problem(self.base, exc) from None
            if status in (400, 401):
                tokens.refresh = tokens.renew_at = None
                raise Unauthorized(SESSION_ENDED)
            if status != 200:
                raise RequestFailed(f"could not renew the session: {_error_text(status, payload)}")
            try:
                tokens.take(msgspec.json.decode(payload, type=AccessToken))
            except msgspec.DecodeError as exc:
                raise RequestFailed(f"unexpected answer from {self.base}: {exc}") from None

    async def keep_fresh(self) -> None:
        """Renew the access token shortly before it expires, for as long as the session lasts."""
        while self.tokens is not None and self.tokens.renew_at is not None:
            await asyncio.sleep(max(0.0, self.tokens.renew_at - time.monotonic()))
            try:
                await self.renew(self.tokens.access)
            except Unauthorized:
                return  # the next request says so
            except RequestFailed:
                self.tokens.renew_at = time.monotonic() + RETRY_SECONDS

    async def call(
        self,
        method: str,
        path: str,
        answer: type[T],
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, str | int] | None = None,
    ) -> T:
        data = None if body is None else msgspec.json.encode(body)
        sent = self.token
        status, payload = await self._send(method, path, data, params)
        if status == 401 and sent is not None:
            await self.renew(sent)
            status, payload = await self._send(method, path, data, params)
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

    async def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        params: dict[str, str | int] | None,
    ) -> tuple[int, bytes]:
        headers = dict(self.auth)
        if data is not None:
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
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_problem(self.base, exc) from None


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


async def _login(base: str, username: str, password: str) -> Tokens:
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
    return Tokens.of(answer)


def login(url: str, username: str, password: str) -> Tokens:
    """A session's tokens for these credentials, or a one-line :class:`ClientError`."""
    return asyncio.run(_login(url, username, password))
