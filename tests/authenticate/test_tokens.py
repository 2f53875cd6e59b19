"""ID token validation rules, with keys made here (no network)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from gatehouse.authenticate.errors import InvalidIdToken
from gatehouse.authenticate.tokens import IdTokenRules, UnknownSigningKey, validate_id_token

NOW = 1_700_000_000
ISSUER = "https://idp.example.com"
SECRET = "client-secret-0123456789-0123456789-abcdef"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec1"})
PUBLIC = [
    RSAKey.import_key(RSA.as_dict(private=False)),
    ECKey.import_key(EC.as_dict(private=False)),
]
RULES = IdTokenRules(
    issuer=ISSUER,
    client_id="gatehouse",
    client_secret=SECRET,
    allowed_algs=("RS256", "ES256", "HS256"),
    nonce="n-123",
)


def claims(**over: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "gatehouse",
        "exp": NOW + 300,
        "iat": NOW,
        "nonce": "n-123",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(c: dict[str, Any], alg: str = "RS256", kid: str | None = "rsa1") -> str:
    header: dict[str, Any] = {"alg": alg}
    if kid:
        header["kid"] = kid
    key: Any = {"RS256": RSA, "ES256": EC, "HS256": OctKey.import_key(SECRET.encode())}[alg]
    return jwt.encode(header, c, key)


def check(token: str, rules: IdTokenRules = RULES, now: float = NOW) -> dict[str, Any]:
    return validate_id_token(token, PUBLIC, rules, now)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_tokens() -> None:
    assert check(sign(claims()))["sub"] == "alice"
    assert check(sign(claims(), "ES256", "ec1"))["sub"] == "alice"
    assert check(sign(claims(), "HS256", None))["sub"] == "alice"
    assert check(sign(claims(), "RS256", None))["sub"] == "alice"  # no kid: by key type
    assert check(sign(claims(aud=["gatehouse", "api"], azp="gatehouse")))["sub"] == "alice"


@pytest.mark.parametrize(
    ("name", "token_claims"),
    [
        ("wrong issuer", claims(iss="https://evil.example.com")),
        ("issuer with trailing slash", claims(iss=ISSUER + "/")),
        ("wrong audience", claims(aud="someone-else")),
        ("audience list without us", claims(aud=["a", "b"], azp="a")),
        ("several audiences, no azp", claims(aud=["gatehouse", "api"])),
        ("azp is another client", claims(azp="other")),
        ("expired", claims(exp=NOW - 61)),
        ("no exp", claims(exp=None)),
        ("no iat", claims(iat=None)),
        ("issued in the future", claims(iat=NOW + 120)),
        ("not yet valid", claims(nbf=NOW + 120)),
        ("no sub", claims(sub=None)),
        ("sub not a string", claims(sub=42)),
        ("nonce mismatch", claims(nonce="other")),
        ("no nonce", claims(nonce=None)),
        ("no iss", claims(iss=None)),
    ],
)
def test_claim_rules(name: str, token_claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidIdToken):
        check(sign(token_claims))


def test_leeway() -> None:
    check(sign(claims(exp=NOW - 30, iat=NOW + 30)))


def test_refresh_token_without_nonce_rule() -> None:
    rules = IdTokenRules(ISSUER, "gatehouse", SECRET, ("RS256",), nonce=None)
    check(sign(claims(nonce=None)), rules)


def test_alg_none() -> None:
    token = b64(b'{"alg":"none"}') + "." + b64(json.dumps(claims()).encode()) + "."
    with pytest.raises(InvalidIdToken):
        check(token)
    rules = IdTokenRules(ISSUER, "gatehouse", SECRET, ("none", "RS256"), nonce="n-123")
    with pytest.raises(InvalidIdToken):
        check(token, rules)


def test_alg_not_announced_by_idp() -> None:
    rules = IdTokenRules(ISSUER, "gatehouse", SECRET, ("RS256",), nonce="n-123")
    with pytest.raises(InvalidIdToken):
        check(sign(claims(), "ES256", "ec1"), rules)
    with pytest.raises(InvalidIdToken):
        check(sign(claims(), "HS256", None), rules)


def test_hmac_with_wrong_secret() -> None:
    token = jwt.encode({"alg": "HS256"}, claims(), OctKey.import_key(b"wrong-secret" * 4))
    with pytest.raises(InvalidIdToken):
        check(token)


def test_hmac_without_client_secret() -> None:
    rules = IdTokenRules(ISSUER, "gatehouse", "", ("HS256",), nonce="n-123")
    with pytest.raises(InvalidIdToken):
        check(sign(claims(), "HS256", None), rules)


def test_unknown_kid() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "rotated"})
    token = jwt.encode({"alg": "RS256", "kid": "rotated"}, claims(), other)
    with pytest.raises(UnknownSigningKey):
        check(token)


def test_key_of_wrong_type_for_alg() -> None:
    # An ES256 header naming the RSA key's kid.
    token = jwt.encode({"alg": "ES256", "kid": "rsa1"}, claims(), EC)
    with pytest.raises(InvalidIdToken):
        check(token)


def test_same_kid_other_key() -> None:
    forged = RSAKey.generate_key(2048, parameters={"kid": "rsa1"})
    with pytest.raises(InvalidIdToken):
        check(jwt.encode({"alg": "RS256", "kid": "rsa1"}, claims(), forged))


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "é.é.é", "x" * 20000])
def test_garbage(token: str) -> None:
    with pytest.raises(InvalidIdToken):
        check(token)


def test_tenant_issuer() -> None:
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    rules = IdTokenRules(template, "gatehouse", SECRET, ("RS256",), "n-123", tenant_issuer=True)
    good = claims(iss="https://login.microsoftonline.com/t-1/v2.0", tid="t-1")
    check(sign(good), rules)
    with pytest.raises(InvalidIdToken):
        check(sign(claims(iss="https://login.microsoftonline.com/t-1/v2.0", tid="t-2")), rules)
    with pytest.raises(InvalidIdToken):
        check(sign(claims(iss="https://login.microsoftonline.com/t-1/v2.0")), rules)
