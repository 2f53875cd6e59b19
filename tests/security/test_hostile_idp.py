"""A malicious or broken OpenID provider (:class:`security.idp.HostileIdp` on loopback).

The attacker controls the IdP's answers: ID tokens with bad signatures, foreign
``iss``/``aud``/``nonce``, ``alg: none`` or HMAC keyed with the public key; token
responses that are huge, malformed or hang; callback parameters that lie. For every one
the sign-in must fail closed: no session cookie on any host, the upstream never
reached, nothing the IdP said reflected in the page, and gatehouse still serving.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from support.browser import Browser

from .conftest import Stack
from .idp import CLIENT_SECRET, HostileIdp, b64url, compact

Mint = Callable[[dict[str, Any], dict[str, Any], HostileIdp], str]


def _attempt(stack: Stack) -> tuple[httpx.Response, Browser]:
    browser = Browser(stack.port)
    final = browser.follow("http://app.localhost/")
    return final, browser


def _failed_closed(stack: Stack, final: httpx.Response, browser: Browser) -> None:
    assert final.status_code in (400, 401, 403, 502, 503, 504), final.status_code
    assert "_gatehouse" not in browser.cookies.get("app.localhost", {})
    assert "_gatehouse" not in browser.cookies.get("authenticate.localhost", {})
    assert stack.app.requests == []
    assert "Traceback" not in final.text


def _with(**over: Any) -> Mint:
    def mint(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
        return idp.sign(header, {**claims, **over})

    return mint


def _drop(name: str) -> Mint:
    def mint(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
        return idp.sign(header, {k: v for k, v in claims.items() if k != name})

    return mint


def _other_key(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
    return jwt.encode(header, claims, RSAKey.generate_key(2048, {"kid": "k1"}), ["RS256"])


def _alg_none(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
    return compact({"alg": "none", "typ": "JWT"}, claims)


def _alg_none_with_signature(
    header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp
) -> str:
    honest = idp.sign(header, claims)
    return compact({"alg": "none", "kid": "k1"}, claims) + honest.rsplit(".", 1)[1]


def _hs256_public_key(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
    pem = idp.key.get_public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64url(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def _hs256_client_secret(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
    # Legitimate only when the IdP announces HS256; this one announces RS256 only.
    return jwt.encode(
        {"alg": "HS256"}, claims, OctKey.import_key(CLIENT_SECRET.encode()), ["HS256"]
    )


def _huge(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
    return idp.sign(header, {**claims, "pad": "x" * 20000})


def _signature_stripped(header: dict[str, Any], claims: dict[str, Any], idp: HostileIdp) -> str:
    return idp.sign(header, claims).rsplit(".", 1)[0] + "."


TOKENS: dict[str, Mint] = {
    "signed-by-another-key": _other_key,
    "signature-stripped": _signature_stripped,
    "alg-none": _alg_none,
    "alg-none-kept-signature": _alg_none_with_signature,
    "hs256-with-idp-public-key": _hs256_public_key,
    "hs256-not-announced": _hs256_client_secret,
    "wrong-iss": _with(iss="http://evil.example"),
    "wrong-aud": _with(aud="someone-else"),
    "aud-list-without-azp": _with(aud=["gatehouse-redteam", "someone-else"]),
    "foreign-azp": _with(azp="someone-else"),
    "wrong-nonce": _with(nonce="replayed-nonce"),
    "no-nonce": _drop("nonce"),
    "no-sub": _drop("sub"),
    "expired": _with(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "issued-in-the-future": _with(iat=int(time.time()) + 3600),
    "oversized": _huge,
}


@pytest.mark.parametrize("mint", list(TOKENS.values()), ids=list(TOKENS))
def test_bad_id_token_fails_closed(fresh: Stack, mint: Mint) -> None:
    fresh.idp.mint = mint
    final, browser = _attempt(fresh)
    _failed_closed(fresh, final, browser)


def test_control_honest_idp_signs_in(fresh: Stack) -> None:
    final, browser = _attempt(fresh)
    assert final.status_code == 200 and "_gatehouse" in browser.cookies["app.localhost"]


BODIES: dict[str, tuple[int, bytes]] = {
    "huge-json": (
        200,
        json.dumps({"access_token": "a" * 100_000, "token_type": "Bearer"}).encode(),
    ),
    "not-json": (200, b"<html>hello</html>"),
    "json-array": (200, b"[1, 2, 3]"),
    "no-id-token": (200, b'{"access_token": "x", "token_type": "Bearer"}'),
    "token-type-mac": (200, b'{"access_token": "x", "token_type": "mac", "id_token": "a.b.c"}'),
    "server-error-with-trace": (500, b"Traceback (most recent call last): IDP-SECRET-TRACE"),
    "error-with-markup": (
        400,
        b'{"error": "invalid_grant", "error_description": "<script>IDP-XSS</script>"}',
    ),
}


@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
def test_bad_token_response_fails_closed_without_reflection(
    fresh: Stack, body: tuple[int, bytes]
) -> None:
    fresh.idp.token_body = lambda: body
    final, browser = _attempt(fresh)
    _failed_closed(fresh, final, browser)
    for marker in ("IDP-SECRET-TRACE", "IDP-XSS", "<script>", "aaaaaaaaaa"):
        assert marker not in final.text


@pytest.mark.parametrize(
    "extra",
    [
        {"iss": "http://evil.example"},
        {"error": "access_denied", "error_description": "<script>IDP-XSS</script>"},
        {"state": "g1.forged"},
        {"code": ""},
    ],
    ids=["iss-mix-up", "error-with-markup", "state-replaced", "empty-code"],
)
def test_lying_callback_parameters_fail_closed(fresh: Stack, extra: dict[str, str]) -> None:
    fresh.idp.callback_extra = extra
    final, browser = _attempt(fresh)
    _failed_closed(fresh, final, browser)
    assert "IDP-XSS" not in final.text and "<script>" not in final.text


def test_hanging_token_endpoint_is_bounded_and_blocks_nobody(fresh: Stack) -> None:
    """The IdP holds the token request open: gatehouse gives up (IdP timeout, 10 s) and
    answers 503 while serving everyone else in the meantime."""
    fresh.idp.hang = threading.Event()
    result: list[tuple[httpx.Response, Browser]] = []
    worker = threading.Thread(target=lambda: result.append(_attempt(fresh)), daemon=True)
    started = time.monotonic()
    worker.start()
    while not fresh.idp.token_requests:
        assert time.monotonic() - started < 5, "the token request never arrived"
        time.sleep(0.02)  # polling for the request to be in flight, not for time to pass
    ping = httpx.get(f"http://127.0.0.1:{fresh.port}/ping", timeout=2)
    public = httpx.get(
        f"http://127.0.0.1:{fresh.port}/", headers={"Host": "pub.localhost"}, timeout=2
    )
    assert ping.status_code == 200 and public.status_code == 200
    worker.join(20)
    fresh.idp.hang.set()
    [(final, browser)] = result
    assert time.monotonic() - started < 15
    fresh.app.reset()  # the public request above reached it, by design
    _failed_closed(fresh, final, browser)
    assert final.status_code in (502, 503, 504)
