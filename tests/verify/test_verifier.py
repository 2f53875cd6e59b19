"""The SDK's Verifier: accepts gatehouse assertions, refuses each kind of bad token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from gatehouse.identity.assertion import AssertionMinter, AssertionSpec
from gatehouse.identity.jws import JwsSigner
from gatehouse.identity.keys import KeySet
from gatehouse.sessions.model import Session
from gatehouse.verify import (
    ExpiredToken,
    InvalidSignature,
    KeysUnavailable,
    MalformedToken,
    MissingClaim,
    TokenNotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
    VerificationError,
    Verifier,
    WrongAudience,
    WrongIssuer,
)
from gatehouse.verify.jwks import JwksCache
from gatehouse.verify.verifier import issuer_host, jwks_url_for

from .conftest import JwksServer, public_pem

HOST = "app.example.com"
SESSION = Session(id="sid-1", user_id="u-1", email="u@example.com", name="U", groups=("g1", "g2"))


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    h = b64u(json.dumps(header).encode())
    c = b64u(json.dumps(claims).encode())
    return f"{h}.{c}.{b64u(signature)}"


def good_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": HOST,
        "aud": HOST,
        "sub": "u-1",
        "email": "u@example.com",
        "groups": [],
        "iat": now,
        "exp": now + 300,
    }
    claims.update(over)
    return claims


def sign_claims(ks: KeySet, claims: dict[str, Any]) -> str:
    return JwsSigner(ks.signer()).sign(claims)


def verifier(server: JwksServer, **kw: Any) -> Verifier:
    kw.setdefault("issuer", HOST)
    return Verifier(server.url, **kw)


def test_accepts_assertion(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    ident = verifier(jwks_server).verify(token)
    assert (ident.sub, ident.email, ident.name, ident.groups) == (
        "u-1",
        "u@example.com",
        "U",
        ("g1", "g2"),
    )
    assert ident.claims["sid"] == "sid-1" and ident.session_id == "sid-1"
    with pytest.raises(TypeError):
        ident.claims["sub"] = "x"  # type: ignore[index]


def test_accepts_rs256(jwks_server: JwksServer, rsa_keyset: KeySet) -> None:
    jwks_server.publish(rsa_keyset)
    token = AssertionMinter(rsa_keyset).mint(SESSION, HOST).jwt
    assert verifier(jwks_server).verify(token).sub == "u-1"


def test_issuer_forms_are_equivalent(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    uri_token = AssertionMinter(ec_keyset).mint(SESSION, HOST, AssertionSpec.build("uri")).jwt
    host_token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    for issuer in (HOST, f"https://{HOST}/"):
        v = verifier(jwks_server, issuer=issuer)
        assert v.verify(uri_token).sub == v.verify(host_token).sub == "u-1"


def test_async_verify(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    v = verifier(jwks_server)

    async def twice() -> None:
        assert (await v.averify(token)).sub == "u-1"  # fetches in a thread
        assert (await v.averify(token)).sub == "u-1"  # from cache

    asyncio.run(twice())
    assert jwks_server.fetches == 1


# -- rejections, each with its reason ------------------------------------------------------


def test_forged_signature(jwks_server: JwksServer, ec_keyset: KeySet, ec_keyset2: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    v = verifier(jwks_server)
    token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    h, c, s = token.split(".")
    # Claims changed after signing.
    evil = b64u(
        json.dumps({**json.loads(base64.urlsafe_b64decode(c + "==")), "sub": "admin"}).encode()
    )
    with pytest.raises(InvalidSignature) as info:
        v.verify(f"{h}.{evil}.{s}")
    assert info.value.reason == "bad_signature"
    # Signed by another key that claims the published kid.
    other = JwsSigner(ec_keyset2.signer()).sign(good_claims())
    forged = f"{h}.{other.split('.', 1)[1]}"
    with pytest.raises(InvalidSignature):
        v.verify(forged)
    # A signature of the wrong length.
    with pytest.raises(InvalidSignature, match="64 bytes"):
        v.verify(f"{h}.{c}.{b64u(b'x' * 70)}")


def test_wrong_kid_refetches_once(
    jwks_server: JwksServer, ec_keyset: KeySet, ec_keyset2: KeySet
) -> None:
    jwks_server.publish(ec_keyset)
    v = verifier(jwks_server)
    v.verify(AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt)
    assert jwks_server.fetches == 1
    stranger = AssertionMinter(ec_keyset2).mint(SESSION, HOST).jwt
    with pytest.raises(UnknownKey) as info:
        v.verify(stranger)
    assert info.value.reason == "unknown_kid"
    # Just fetched: the unknown kid does not trigger a refetch within the interval.
    assert jwks_server.fetches == 1
    v2 = verifier(jwks_server, min_refetch_interval_s=0)
    v2.verify(AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt)
    jwks_server.publish(ec_keyset, ec_keyset2)  # the new key appears
    assert v2.verify(stranger).sub == "u-1"  # one refetch found it


def test_unknown_kid_refetch_is_rate_limited(
    jwks_server: JwksServer, ec_keyset: KeySet, ec_keyset2: KeySet
) -> None:
    jwks_server.publish(ec_keyset)
    v = verifier(jwks_server)
    now = [1000.0]
    v.keys = JwksCache(jwks_server.url, min_refetch_interval_s=10, clock=lambda: now[0])
    v.verify(AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt)
    stranger = AssertionMinter(ec_keyset2).mint(SESSION, HOST).jwt
    for _ in range(5):
        with pytest.raises(UnknownKey):
            v.verify(stranger)
    assert jwks_server.fetches == 1
    now[0] += 10
    with pytest.raises(UnknownKey):
        v.verify(stranger)
    assert jwks_server.fetches == 2


def test_missing_kid(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    with pytest.raises(UnknownKey, match="no kid"):
        verifier(jwks_server).verify(craft({"alg": "ES256"}, good_claims(), b"x" * 64))


def test_alg_none(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    kid = ec_keyset.signer().kid
    for alg in ("none", "None", "NONE", None):
        with pytest.raises(UnsupportedAlgorithm) as info:
            verifier(jwks_server).verify(craft({"alg": alg, "kid": kid}, good_claims()))
        assert info.value.reason == "unsupported_alg"
    assert jwks_server.fetches == 0  # refused before any key was looked up


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_public_key_as_secret(
    jwks_server: JwksServer, rsa_keyset: KeySet, alg: str
) -> None:
    jwks_server.publish(rsa_keyset)
    kid = rsa_keyset.signer().kid
    h = b64u(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    c = b64u(json.dumps(good_claims()).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(public_pem(rsa_keyset), f"{h}.{c}".encode(), digest).digest()
    with pytest.raises(UnsupportedAlgorithm, match="not allowed"):
        verifier(jwks_server).verify(f"{h}.{c}.{b64u(sig)}")


def test_alg_key_mismatch(jwks_server: JwksServer, ec_keyset: KeySet, rsa_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset, rsa_keyset)
    token = craft({"alg": "RS256", "kid": ec_keyset.signer().kid}, good_claims(), b"x" * 256)
    with pytest.raises(UnsupportedAlgorithm, match="but key"):
        verifier(jwks_server).verify(token)


def test_expired(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    now = int(time.time())
    v = verifier(jwks_server)
    with pytest.raises(ExpiredToken) as info:
        v.verify(sign_claims(ec_keyset, good_claims(iat=now - 400, exp=now - 100)))
    assert info.value.reason == "expired"
    # Within the leeway (60 s) it still passes.
    assert v.verify(sign_claims(ec_keyset, good_claims(iat=now - 330, exp=now - 30))).sub == "u-1"
    strict = verifier(jwks_server, leeway_s=0)
    with pytest.raises(ExpiredToken):
        strict.verify(sign_claims(ec_keyset, good_claims(iat=now - 330, exp=now - 30)))


def test_issued_in_future(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    now = int(time.time())
    with pytest.raises(TokenNotYetValid):
        verifier(jwks_server).verify(
            sign_claims(ec_keyset, good_claims(iat=now + 600, exp=now + 900))
        )
    with pytest.raises(TokenNotYetValid):
        verifier(jwks_server).verify(sign_claims(ec_keyset, good_claims(nbf=now + 600)))


def test_wrong_audience(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    token = AssertionMinter(ec_keyset).mint(SESSION, "other.example.com").jwt
    with pytest.raises(WrongAudience) as info:
        verifier(jwks_server, issuer="other.example.com", audience=HOST).verify(token)
    assert info.value.reason == "wrong_audience"
    ok = verifier(jwks_server, issuer="other.example.com", audience=[HOST, "other.example.com"])
    assert ok.verify(token).sub == "u-1"
    with pytest.raises(WrongAudience):
        verifier(jwks_server).verify(sign_claims(ec_keyset, good_claims(aud=["x", "y"])))


def test_wrong_issuer(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    token = AssertionMinter(ec_keyset).mint(SESSION, "evil.example.com").jwt
    with pytest.raises(WrongIssuer) as info:
        verifier(jwks_server, audience="evil.example.com").verify(token)
    assert info.value.reason == "wrong_issuer"


@pytest.mark.parametrize("drop", ["exp", "iat", "iss", "aud", "sub"])
def test_missing_claims(jwks_server: JwksServer, ec_keyset: KeySet, drop: str) -> None:
    jwks_server.publish(ec_keyset)
    claims = good_claims()
    del claims[drop]
    with pytest.raises(MissingClaim):
        verifier(jwks_server).verify(sign_claims(ec_keyset, claims))


def test_empty_sub_and_string_times(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    with pytest.raises(MissingClaim):
        verifier(jwks_server).verify(sign_claims(ec_keyset, good_claims(sub="")))
    with pytest.raises(MissingClaim):
        verifier(jwks_server).verify(
            sign_claims(ec_keyset, good_claims(exp=str(int(time.time()) + 60)))
        )


def test_malformed(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    h, c, s = token.split(".")
    v = verifier(jwks_server)
    dup = b64u(b'{"alg":"ES256","alg":"none"}')
    bad = [
        "",
        "abc",
        f"{h}.{c}",
        f"{h}.{c}.{s}.x",
        f"{h}=.{c}.{s}",
        f"{h}.{c}.{s}==",
        f"{b64u(b'[1]')}.{c}.{s}",
        f"{b64u(b'not json')}.{c}.{s}",
        "x" * 20000,
        f"{dup}.{c}.{s}",
    ]
    for token_text in bad:
        with pytest.raises(MalformedToken):
            v.verify(token_text)
    with pytest.raises(MalformedToken, match="critical"):
        v.verify(craft({"alg": "ES256", "kid": "k", "crit": ["exp"]}, good_claims()))


# -- keys: caching, availability, rotation ----------------------------------------------------


def test_cache_control_max_age_honoured(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    jwks_server.cache_control = "public, max-age=30"
    now = [0.0]
    v = verifier(jwks_server)
    v.keys = JwksCache(jwks_server.url, clock=lambda: now[0])
    token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    v.verify(token)
    now[0] = 29.9
    v.verify(token)
    assert jwks_server.fetches == 1
    now[0] = 30.0
    v.verify(token)
    assert jwks_server.fetches == 2


def test_keys_unavailable_fails_closed(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    jwks_server.publish(ec_keyset)
    now = [0.0]
    v = verifier(jwks_server)
    v.keys = JwksCache(jwks_server.url, clock=lambda: now[0])
    token = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    v.verify(token)
    jwks_server.status = 500
    now[0] = 61
    with pytest.raises(KeysUnavailable) as info:
        v.verify(token)  # stale keys are not used
    assert info.value.reason == "jwks_unavailable"
    jwks_server.status = 200
    jwks_server.doc = None  # not JSON
    now[0] = 63
    with pytest.raises(KeysUnavailable):
        v.verify(token)


def test_unreachable_jwks(ec_keyset: KeySet) -> None:
    v = Verifier("http://127.0.0.1:9/jwks.json", issuer=HOST, timeout_s=2)
    with pytest.raises(KeysUnavailable):
        v.verify(AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt)


def test_rotation_and_removal(
    jwks_server: JwksServer, ec_keyset: KeySet, ec_keyset2: KeySet
) -> None:
    jwks_server.publish(ec_keyset, ec_keyset2)
    now = [0.0]
    v = verifier(jwks_server)
    v.keys = JwksCache(jwks_server.url, clock=lambda: now[0])
    old = AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt
    new = AssertionMinter(ec_keyset2).mint(SESSION, HOST).jwt
    assert v.verify(old).sub == v.verify(new).sub == "u-1"
    jwks_server.publish(ec_keyset2)  # the old key is dropped
    now[0] = 61  # after max-age
    assert v.verify(new).sub == "u-1"
    with pytest.raises(UnknownKey):
        v.verify(old)


def test_jwks_ignores_unusable_keys(jwks_server: JwksServer, ec_keyset: KeySet) -> None:
    good = ec_keyset.jwks()["keys"][0]
    jwks_server.doc = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {**good, "kid": "short-x", "x": good["x"][:-2]},
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "wrong-alg", "alg": "RS256"},
            {
                "kty": "RSA",
                "kid": "small",
                "n": b64u((2**1023 + 1).to_bytes(128, "big")),
                "e": "AQAB",
            },
            "junk",
            good,
        ]
    }
    v = verifier(jwks_server)
    assert v.verify(AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt).sub == "u-1"
    assert v.keys.peek(good["kid"]) is not None
    for kid in ("hmac", "short-x", "enc", "wrong-alg", "small"):
        assert v.keys.peek(kid) is None


def test_url_derivation() -> None:
    assert jwks_url_for(HOST) == f"https://{HOST}/.well-known/pomerium/jwks.json"
    assert jwks_url_for(f"https://{HOST}/") == f"https://{HOST}/.well-known/pomerium/jwks.json"
    assert (
        jwks_url_for("http://localhost:8080/")
        == "http://localhost:8080/.well-known/pomerium/jwks.json"
    )
    assert Verifier(issuer=HOST).keys.url == f"https://{HOST}/.well-known/pomerium/jwks.json"
    assert issuer_host("https://App.Example.com:8443/") == HOST
    with pytest.raises(ValueError):
        Verifier(issuer="")


def test_all_errors_are_verification_errors() -> None:
    for cls in (
        ExpiredToken,
        InvalidSignature,
        KeysUnavailable,
        MalformedToken,
        MissingClaim,
        TokenNotYetValid,
        UnknownKey,
        UnsupportedAlgorithm,
        WrongAudience,
        WrongIssuer,
    ):
        assert issubclass(cls, VerificationError)
        assert cls.reason != VerificationError.reason


def test_sdk_imports_without_proxy_dependencies() -> None:
    code = (
        "import sys\n"
        "import gatehouse.verify, gatehouse.verify.asgi, gatehouse.verify.wsgi\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'yaml', 'httptools', 'uvloop', 'jinja2', 'redis')\n"
        "         or m.startswith('gatehouse.config')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
