"""Tokens: gatehouse's assertions checked with libraries we did not write, and forged ones.

gatehouse's ``X-Pomerium-Jwt-Assertion`` is verified with PyJWT, jwcrypto and joserfc
against the JWKS it publishes. Forged assertions (``alg: none``, HS256 keyed with
gatehouse's public key, the wrong audience or issuer, expired, an attacker's key under
gatehouse's ``kid``) are made with PyJWT/jwcrypto and sent by a client: none of them
reaches an upstream as the assertion, and gatehouse's SDK (:mod:`gatehouse.verify`,
what an upstream uses) refuses every one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from gatehouse.verify import Verifier
from gatehouse.verify.errors import VerificationError
from support.browser import Browser

from .conftest import Stack, cookie_of, jwks_keys, programmatic_token, verify_assertion


def _assertion(stack: Stack, browser: Browser, host: str = "app.localhost") -> str:
    response = browser.get(f"http://{host}/tokens")
    assert response.status_code == 200
    token = stack.app.requests[-1].header("x-pomerium-jwt-assertion")
    assert token
    return token


def _jwks(stack: Stack) -> dict[str, Any]:
    response = httpx.get(
        f"http://127.0.0.1:{stack.port}/.well-known/pomerium/jwks.json",
        headers={"Host": "app.localhost"},
        timeout=5,
    )
    data: dict[str, Any] = response.json()
    return data


def test_assertion_verifies_with_pyjwt(fresh: Stack, alice: Browser) -> None:
    claims = verify_assertion(fresh.port, _assertion(fresh, alice))
    assert claims["email"] == "alice@example.com" and claims["sub"] == "alice-sub"


def test_assertion_verifies_with_jwcrypto(fresh: Stack, alice: Browser) -> None:
    token = _assertion(fresh, alice)
    keys = jc_jwk.JWKSet.from_json(json.dumps(_jwks(fresh)))
    parsed = jc_jwt.JWT(
        jwt=token,
        key=keys,
        algs=["ES256"],
        check_claims={"aud": "app.localhost", "iss": "app.localhost", "exp": None},
    )
    assert json.loads(parsed.claims)["email"] == "alice@example.com"


def test_assertion_verifies_with_joserfc(fresh: Stack, alice: Browser) -> None:
    token = _assertion(fresh, alice)
    decoded = jose_jwt.decode(token, KeySet.import_key_set(_jwks(fresh)), algorithms=["ES256"])
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": "app.localhost"},
        aud={"essential": True, "value": "app.localhost"},
        exp={"essential": True},
    ).validate(decoded.claims)
    assert decoded.header["alg"] == "ES256"


def test_kid_is_the_rfc7638_thumbprint(fresh: Stack, alice: Browser) -> None:
    token = _assertion(fresh, alice)
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [k for k in _jwks(fresh)["keys"] if k["kid"] == kid]
    ours = jc_jwk.JWK(**key).thumbprint(hashes.SHA256())
    digest = base64.urlsafe_b64decode(ours + "=" * (-len(ours) % 4)).hex()
    assert kid == digest  # hex of the RFC 7638 SHA-256 thumbprint


def test_assertion_claims_are_bounded_and_carry_no_idp_tokens(fresh: Stack, alice: Browser) -> None:
    token = _assertion(fresh, alice)
    claims = verify_assertion(fresh.port, token)
    assert claims["aud"] == claims["iss"] == "app.localhost"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["iat"] <= time.time() + 5
    for forbidden in ("id_token", "access_token", "refresh_token", "nonce", "at_hash"):
        assert forbidden not in claims
    assert "rt-" not in token and "at-" not in json.dumps(claims)


def test_assertion_for_one_host_is_refused_for_another(fresh: Stack, alice: Browser) -> None:
    """``aud`` is the route host: an upstream checking ``aud`` cannot be fed another
    route's assertion (a compromised app replaying its users' tokens elsewhere)."""
    assert alice.follow("http://other.localhost/").status_code == 200
    other = fresh.app.requests[-1].header("x-pomerium-jwt-assertion") or ""
    assert verify_assertion(fresh.port, other, "other.localhost")["aud"] == "other.localhost"
    key = jwks_keys(fresh.port).keys[0].key
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(other, key, algorithms=["ES256"], audience="app.localhost")


def test_jwks_publishes_no_private_key_material(fresh: Stack) -> None:
    for key in _jwks(fresh)["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), key
        assert key.get("alg") in ("ES256", "RS256", None)


# -- forged assertions ----------------------------------------------------------------------


def _public_pem(stack: Stack) -> bytes:
    key = jwks_keys(stack.port).keys[0]
    return key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "app.localhost",
        "aud": "app.localhost",
        "sub": "admin",
        "email": "admin@example.com",
        "groups": ["admins"],
        "iat": now,
        "exp": now + 300,
    }
    return {**base, **over}


def _forge_none(stack: Stack) -> str:
    return jwt.encode(_claims(), None, algorithm="none")


def _forge_hs256_public_key(stack: Stack) -> str:
    # PyJWT and jwcrypto refuse a PEM as an HMAC secret (that is the point): sign by hand.
    kid = jwks_keys(stack.port).keys[0].key_id
    head = _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(_public_pem(stack), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _attacker_key() -> jc_jwk.JWK:
    return jc_jwk.JWK.generate(kty="EC", crv="P-256")


def _forge_attacker_key_with_our_kid(stack: Stack) -> str:
    kid = jwks_keys(stack.port).keys[0].key_id
    token = jc_jwt.JWT(header={"alg": "ES256", "kid": kid}, claims=_claims())
    token.make_signed_token(_attacker_key())
    return str(token.serialize())


def _forge_with(**over: Any) -> Callable[[Stack], str]:
    def forge(stack: Stack) -> str:
        token = jc_jwt.JWT(header={"alg": "ES256", "kid": "attacker"}, claims=_claims(**over))
        token.make_signed_token(_attacker_key())
        return str(token.serialize())

    return forge


FORGERIES: dict[str, Callable[[Stack], str]] = {
    "alg-none": _forge_none,
    "hs256-with-public-key": _forge_hs256_public_key,
    "attacker-key-our-kid": _forge_attacker_key_with_our_kid,
    "wrong-audience": _forge_with(aud="evil.localhost"),
    "wrong-issuer": _forge_with(iss="evil.localhost"),
    "expired": _forge_with(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000),
}


@pytest.mark.parametrize("forge", list(FORGERIES.values()), ids=list(FORGERIES))
def test_forged_assertion_from_a_client_is_never_the_upstreams_assertion(
    fresh: Stack, alice: Browser, forge: Callable[[Stack], str]
) -> None:
    forged = forge(fresh)
    response = alice.get(
        "http://app.localhost/forged", headers={"X-Pomerium-Jwt-Assertion": forged}
    )
    assert response.status_code == 200
    seen = fresh.app.requests[-1]
    [assertion] = seen.header_all("x-pomerium-jwt-assertion")
    assert assertion != forged
    assert verify_assertion(fresh.port, assertion)["email"] == "alice@example.com"


@pytest.mark.parametrize("forge", list(FORGERIES.values()), ids=list(FORGERIES))
def test_forged_assertion_without_a_session_gets_nowhere(
    fresh: Stack, forge: Callable[[Stack], str]
) -> None:
    response = httpx.get(
        f"http://127.0.0.1:{fresh.port}/",
        headers={
            "Host": "app.localhost",
            "X-Pomerium-Jwt-Assertion": forge(fresh),
            "Authorization": f"Bearer {forge(fresh)}",
        },
        timeout=5,
    )
    assert response.status_code == 401
    assert fresh.app.requests == []


@pytest.mark.parametrize("forge", list(FORGERIES.values()), ids=list(FORGERIES))
def test_gatehouse_sdk_refuses_forged_assertions(
    fresh: Stack, alice: Browser, forge: Callable[[Stack], str]
) -> None:
    """The verifier an upstream embeds (``gatehouse.verify``) accepts gatehouse's own
    assertion and refuses each forgery."""
    verifier = Verifier(
        f"http://127.0.0.1:{fresh.port}/.well-known/pomerium/jwks.json",
        issuer="app.localhost",
        audience="app.localhost",
    )
    assert verifier.verify(_assertion(fresh, alice)).email == "alice@example.com"
    with pytest.raises(VerificationError):
        verifier.verify(forge(fresh))


# -- programmatic tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        "Pomerium AAAA",
        "Pomerium " + "A" * 900,
        "Bearer Pomerium-garbage",
        "Pomerium",
        "pomerium x.y.z",
    ],
)
def test_forged_programmatic_token_is_refused(fresh: Stack, authorization: str) -> None:
    response = httpx.get(
        f"http://127.0.0.1:{fresh.port}/",
        headers={"Host": "app.localhost", "Authorization": authorization},
        timeout=5,
    )
    assert response.status_code == 401
    assert fresh.app.requests == []


def test_host_bound_cookie_is_not_a_programmatic_token(fresh: Stack, alice: Browser) -> None:
    for authorization in (f"Pomerium {cookie_of(alice)}", f"Bearer Pomerium-{cookie_of(alice)}"):
        response = httpx.get(
            f"http://127.0.0.1:{fresh.port}/",
            headers={"Host": "app.localhost", "Authorization": authorization},
            timeout=5,
        )
        assert response.status_code == 401
    assert fresh.app.requests == []


def test_programmatic_token_is_not_a_cookie(fresh: Stack, alice: Browser) -> None:
    token = programmatic_token(alice)
    fresh.app.reset()
    ok = httpx.get(
        f"http://127.0.0.1:{fresh.port}/",
        headers={"Host": "app.localhost", "Authorization": f"Pomerium {token}"},
        timeout=5,
    )
    assert ok.status_code == 200  # control: the token works as a token
    refused = httpx.get(
        f"http://127.0.0.1:{fresh.port}/",
        headers={"Host": "app.localhost", "Cookie": f"_gatehouse={token}"},
        timeout=5,
    )
    assert refused.status_code == 401
    assert len(fresh.app.requests) == 1
