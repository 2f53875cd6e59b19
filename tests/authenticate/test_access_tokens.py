"""JWT access token validation (``idp_access_token_allowed_audiences``), keys made here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import RSAKey

from gatehouse.authenticate.errors import InvalidIdToken
from gatehouse.authenticate.tokens import (
    AccessTokenRules,
    UnknownSigningKey,
    validate_access_token,
)

NOW = 1_700_000_000
ISSUER = "https://idp.example.com"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa1"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "rsa1"})  # same kid, not the IdP's
PUBLIC = [RSAKey.import_key(RSA.as_dict(private=False))]
RULES = AccessTokenRules(
    issuer=ISSUER, audiences=("api://orders", "api://billing"), allowed_algs=("RS256", "HS256")
)


def claims(**over: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "sub": "alice", "aud": "api://orders", "exp": NOW + 300, "iat": NOW}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(c: dict[str, Any], key: Any = RSA, alg: str = "RS256", kid: str = "rsa1") -> str:
    return jwt.encode({"alg": alg, "kid": kid}, c, key)


def check(token: str, rules: AccessTokenRules = RULES) -> dict[str, Any]:
    return validate_access_token(token, PUBLIC, rules, NOW)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_access_tokens() -> None:
    assert check(sign(claims()))["sub"] == "alice"
    assert check(sign(claims(aud="api://billing")))["sub"] == "alice"
    # RFC 7519 §4.1.3: aud may be a list; one allowed member is enough.
    assert check(sign(claims(aud=["api://other", "api://orders"])))["sub"] == "alice"
    # No iat (RFC 9068 requires it, Entra ID has it; we need only exp).
    assert check(sign(claims(iat=None)))["sub"] == "alice"


@pytest.mark.parametrize(
    ("name", "token_claims"),
    [
        ("wrong issuer", claims(iss="https://evil.example.com")),
        ("audience not allowed", claims(aud="api://other")),
        ("audience list without an allowed one", claims(aud=["api://a", "api://b"])),
        ("no audience", claims(aud=None)),
        ("audience not a string", claims(aud=123)),
        ("expired", claims(exp=NOW - 61)),
        ("no exp", claims(exp=None)),
        ("not yet valid", claims(nbf=NOW + 120)),
        ("issued in the future", claims(iat=NOW + 120)),
        ("no sub", claims(sub=None)),
        ("sub not a string", claims(sub=42)),
    ],
)
def test_claim_rules(name: str, token_claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidIdToken):
        check(sign(token_claims))


def test_forged_signature() -> None:
    with pytest.raises(InvalidIdToken, match="signature"):
        check(sign(claims(), OTHER))
    header, _payload, signature = sign(claims()).split(".")
    tampered = json.dumps(claims(sub="mallory")).encode()
    with pytest.raises(InvalidIdToken):
        check(f"{header}.{b64(tampered)}.{signature}")


def test_alg_none() -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa1"}).encode())
    payload = b64(json.dumps(claims()).encode())
    with pytest.raises(InvalidIdToken, match="not accepted"):
        check(f"{header}.{payload}.")


def test_hmac_never_accepted_not_even_with_the_public_key() -> None:
    # Key confusion: HS256 "signed" with the IdP's public key, which anyone can fetch.
    pem = RSA.get_op_key("verify").public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{b64(mac)}"
    with pytest.raises(InvalidIdToken, match="HMAC"):
        check(token)


def test_alg_not_announced() -> None:
    with pytest.raises(InvalidIdToken, match="announced"):
        check(sign(claims()), AccessTokenRules(ISSUER, ("api://orders",), ("ES256",)))


def test_unknown_kid_asks_for_a_refetch() -> None:
    with pytest.raises(UnknownSigningKey):
        check(sign(claims(), kid="rotated"))


@pytest.mark.parametrize(
    "token", ["", "garbage", "a.b.c", "a.b", "....", "é.é.é", "x" * 20_000, b64(b"{}") + ".e30."]
)
def test_garbage(token: str) -> None:
    with pytest.raises(InvalidIdToken):
        check(token)
