"""Forged and broken JWTs: refused on REST (401) and on the WebSocket handshake.

docs/protocol.md section 1: a bad token gets ``401`` on ``/api/*``; on ``/ws`` the
handshake is refused (HTTP 401/403) or the socket is closed with 4401 before
any data. Tokens in query strings never reach the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support import JWT_SECRET, Server, User, register_and_login

WS_UNAUTHORIZED = 4401


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def hs256_by_hand(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 over any key (PyJWT refuses PEM keys as HMAC secrets, an attacker does not)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned(payload: dict[str, Any], alg: str = "none", signature: str = "") -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(payload)}.{signature}"


@cache
def attacker_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def attacker_rsa_public_pem() -> bytes:
    return (
        attacker_rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@dataclass
class Target:
    """Whom the forged tokens claim to be."""

    user: User
    deleted: User  # registered, logged in, then deleted

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": str(self.user.id), "exp": now + 600, "iat": now - 5}
        for name, value in overrides.items():
            if value is _DROP:
                claims.pop(name)
            else:
                claims[name] = value
        return claims

    def signed(self, **overrides: Any) -> str:
        """Signed with the server's own secret: only the claims are wrong."""
        return jwt.encode(self.claims(**overrides), JWT_SECRET, algorithm="HS256")


_DROP = object()


def _non_ascii_digits(number: int) -> str:
    """The same number in Arabic-Indic digits: ``str.isdigit`` is true, it is no integer id."""
    return "".join(chr(0x660 + int(d)) for d in str(number))


def _swap_payload(target: Target) -> str:
    """The user's real header and signature around another payload."""
    header, _, signature = target.user.token.split(".")
    return f"{header}.{segment(target.claims(sub=str(target.deleted.id)))}.{signature}"


def _jwk_embedded(target: Target) -> str:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(attacker_rsa_key().public_key(), as_dict=True)
    return jwt.encode(
        target.claims(), attacker_rsa_key(), algorithm="RS256", headers={"jwk": public}
    )


TOKENS: dict[str, Callable[[Target], str]] = {
    # alg "none": no signature at all.
    "alg-none": lambda t: unsigned(t.claims()),
    "alg-None": lambda t: unsigned(t.claims(), alg="None"),
    "alg-NONE": lambda t: unsigned(t.claims(), alg="NONE"),
    "alg-none-keeping-a-real-signature": lambda t: unsigned(
        t.claims(), signature=t.user.token.split(".")[2]
    ),
    "alg-none-pyjwt": lambda t: jwt.encode(t.claims(), None, algorithm="none"),
    "alg-missing": lambda t: f"{segment({'typ': 'JWT'})}.{segment(t.claims())}.",
    # HS/RS confusion and foreign keys.
    "hs256-keyed-with-rsa-public-pem": lambda t: hs256_by_hand(
        {"alg": "HS256", "typ": "JWT"}, t.claims(), attacker_rsa_public_pem()
    ),
    "rs256-fresh-rsa-key": lambda t: jwt.encode(t.claims(), attacker_rsa_key(), algorithm="RS256"),
    "es256-fresh-ec-key": lambda t: jwt.encode(
        t.claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
    ),
    "hs256-another-secret": lambda t: jwt.encode(t.claims(), "another-secret-" * 4, "HS256"),
    "hs512-another-secret": lambda t: jwt.encode(t.claims(), "another-secret-" * 5, "HS512"),
    "hs256-empty-secret": lambda t: hs256_by_hand({"alg": "HS256"}, t.claims(), b""),
    # Headers that point at keys elsewhere.
    "kid-jku-elsewhere-rs256": lambda t: jwt.encode(
        t.claims(),
        attacker_rsa_key(),
        algorithm="RS256",
        headers={"kid": "attacker-key", "jku": "http://127.0.0.1:9/jwks.json"},
    ),
    "x5u-elsewhere-rs256": lambda t: jwt.encode(
        t.claims(),
        attacker_rsa_key(),
        algorithm="RS256",
        headers={"x5u": "http://127.0.0.1:9/cert.pem"},
    ),
    "jwk-embedded-rs256": _jwk_embedded,
    "kid-path-traversal-empty-key": lambda t: hs256_by_hand(
        {"alg": "HS256", "kid": "../../../../../../dev/null"}, t.claims(), b""
    ),
    "kid-sql-injection": lambda t: hs256_by_hand(
        {"alg": "HS256", "kid": "x' UNION SELECT 'attacker' --"}, t.claims(), b"attacker"
    ),
    "jku-elsewhere-hs256": lambda t: hs256_by_hand(
        {"alg": "HS256", "jku": "http://127.0.0.1:9/jwks.json", "kid": "k1"},
        t.claims(),
        b"attacker",
    ),
    # Tampered tokens of a real user.
    "signature-stripped": lambda t: t.user.token.rsplit(".", 1)[0] + ".",
    "signature-truncated": lambda t: t.user.token[:-6],
    "payload-swapped": _swap_payload,
    "two-segments": lambda t: t.user.token.rsplit(".", 1)[0],
    "four-segments": lambda t: t.user.token + ".AAAA",
    # Signed with the server's key, with bad claims.
    "missing-sub": lambda t: t.signed(sub=_DROP),
    "sub-empty": lambda t: t.signed(sub=""),
    "sub-json-integer": lambda t: t.signed(sub=t.user.id),
    "sub-null": lambda t: t.signed(sub=None),
    "sub-list": lambda t: t.signed(sub=[str(t.user.id)]),
    "sub-word": lambda t: t.signed(sub="alice"),
    "sub-float": lambda t: t.signed(sub=f"{t.user.id}.0"),
    "sub-negative": lambda t: t.signed(sub=f"-{t.user.id}"),
    "sub-plus-sign": lambda t: t.signed(sub=f"+{t.user.id}"),
    "sub-padded": lambda t: t.signed(sub=f" {t.user.id} "),
    "sub-hex": lambda t: t.signed(sub=hex(t.user.id)),
    "sub-sql": lambda t: t.signed(sub=f"{t.user.id} OR 1=1"),
    "sub-superscript-digit": lambda t: t.signed(sub="\u00b2"),
    "sub-non-ascii-digits": lambda t: t.signed(sub=_non_ascii_digits(t.user.id)),
    "sub-huge-integer": lambda t: t.signed(sub="9" * 40),
    "sub-zero": lambda t: t.signed(sub="0"),
    "missing-exp": lambda t: t.signed(exp=_DROP),
    "exp-past": lambda t: t.signed(exp=int(time.time()) - 60),
    "exp-string": lambda t: t.signed(exp="never"),
    "exp-null": lambda t: t.signed(exp=None),
    "nbf-future": lambda t: t.signed(nbf=int(time.time()) + 3600),
    "nbf-string": lambda t: t.signed(nbf="soon"),
    "deleted-user": lambda t: t.deleted.token,
}


@pytest.fixture(scope="module")
def target(server: Server, alice: User) -> Target:
    deleted = register_and_login(server)
    with deleted.client() as client:
        assert client.get("/api/me").status_code == 200
    server.db.query("DELETE FROM piccolo_user WHERE id = ?", deleted.id)
    return Target(alice, deleted)


def _handshake(server: Server, token: str, *, header: bool) -> str:
    """How the server answered the handshake: 'refused <status>', 'closed <code>' or 'ready'."""
    if header:
        url, extra = server.ws_url, {"Authorization": f"Bearer {token}"}
    else:
        url, extra = f"{server.ws_url}?token={token}", {}
    try:
        with connect(url, additional_headers=extra, open_timeout=10) as socket:
            try:
                first = socket.recv(timeout=10)
            except ConnectionClosed as closed:
                return f"closed {closed.rcvd.code if closed.rcvd else None}"
            return f"accepted, then sent {str(first)[:200]}"
    except InvalidStatus as refused:
        return f"refused {refused.response.status_code}"


REFUSED = ("refused 401", "refused 403", f"closed {WS_UNAUTHORIZED}")


@pytest.mark.parametrize("name", TOKENS)
def test_bad_token_is_refused_everywhere_and_never_logged(
    server: Server, target: Target, name: str
) -> None:
    token = TOKENS[name](target)
    with server.client(token) as client:
        response = client.get("/api/me")
    answer = f"{name}: {response.status_code} {response.text[:300]}"
    assert response.status_code == 401, answer
    assert response.json()["code"] == "unauthorized", answer
    assert "Traceback" not in response.text, answer
    assert _handshake(server, token, header=False) in REFUSED, name
    assert _handshake(server, token, header=True) in REFUSED, name
    log = server.log()
    assert token not in log, f"{name}: the token was logged"
    signature = token.split(".")[2] if token.count(".") >= 2 else ""
    if len(signature) >= 16:
        assert signature not in log, f"{name}: the token's signature was logged"


def test_the_real_token_still_works(server: Server, target: Target) -> None:
    """The refusals above are about the tokens, not a broken server or user."""
    with target.user.client() as client:
        assert client.get("/api/me").json()["id"] == target.user.id
    assert _handshake(server, target.user.token, header=False).startswith("accepted")
    assert _handshake(server, target.user.token, header=True).startswith("accepted")
    assert target.user.token not in server.log()
