"""The assertion's bytes and claims, claim headers, and the per-(session, host) cache."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gatehouse.errors import ConfigError, Unauthenticated
from gatehouse.identity.assertion import (
    ASSERTION_HEADER,
    AssertionMinter,
    AssertionSpec,
    claim_header_value,
    strip_port,
)
from gatehouse.identity.keys import KeySet, load_keyset
from gatehouse.sessions.model import Session

from .conftest import NOW, b64, options

B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _part(token: str, i: int) -> bytes:
    s = token.split(".")[i]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _header(token: str) -> dict[str, Any]:
    return json.loads(_part(token, 0))


def _claims(token: str) -> dict[str, Any]:
    return json.loads(_part(token, 1))


def test_compact_form_no_padding_and_header(keyset: KeySet, session: Session) -> None:
    jwt = AssertionMinter(keyset, clock=Clock()).mint(session, "app.example.com").jwt
    parts = jwt.split(".")
    assert len(parts) == 3
    for p in parts:
        assert B64URL.match(p), "base64url alphabet, no '=' padding"
    assert _header(jwt) == {"alg": "ES256", "kid": keyset.signer(NOW).kid, "typ": "JWT"}
    assert list(_header(jwt)) == ["alg", "kid", "typ"]


def test_es256_signature_is_64_byte_r_s(keyset: KeySet, session: Session) -> None:
    jwt = AssertionMinter(keyset, clock=Clock()).mint(session, "app.example.com").jwt
    sig = _part(jwt, 2)
    assert len(sig) == 64
    key = keyset.signer(NOW).private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.public_key().verify(der, jwt.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))


def test_rs256_signature(rsa_pem: str, session: Session) -> None:
    ks = load_keyset(options(f"signing_key: {b64(rsa_pem)}\n"))
    jwt = AssertionMinter(ks, clock=Clock()).mint(session, "app.example.com").jwt
    assert _header(jwt)["alg"] == "RS256"
    sig = _part(jwt, 2)
    assert len(sig) == 256
    ks.signer(NOW).private_key.public_key().verify(  # type: ignore[union-attr]
        sig, jwt.rsplit(".", 1)[0].encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_claims_exactly(keyset: KeySet, session: Session) -> None:
    a = AssertionMinter(keyset, clock=Clock(NOW + 0.7)).mint(session, "App.Example.com:8443")
    c = _claims(a.jwt)
    assert list(c) == [
        "iss",
        "aud",
        "sub",
        "user",
        "email",
        "name",
        "groups",
        "sid",
        "jti",
        "iat",
        "exp",
    ]
    assert c["iss"] == "app.example.com"
    assert c["aud"] == "app.example.com"
    assert c["sub"] == c["user"] == "user-123"
    assert c["email"] == "ada@example.com"
    assert c["name"] == "Ada Lovelace"
    assert c["groups"] == ["eng", "admins"]
    assert c["sid"] == "sess-1"
    assert type(c["iat"]) is int and type(c["exp"]) is int
    assert c["iat"] == int(NOW) and c["exp"] == c["iat"] + 300
    assert (a.issued_at, a.expires_at) == (c["iat"], c["exp"])
    # Integers in the JSON text, not 1.8e9 or 1800000000.0.
    assert re.search(rb'"iat":\d+,"exp":\d+}$', _part(a.jwt, 1))


def test_uri_issuer_format(keyset: KeySet, session: Session) -> None:
    spec = AssertionSpec.build("uri")
    c = _claims(AssertionMinter(keyset).mint(session, "app.example.com:443", spec).jwt)
    assert c["iss"] == "https://app.example.com/"
    assert c["aud"] == "app.example.com"


def test_groups_empty_list_never_null(keyset: KeySet) -> None:
    s = Session(id="s", user_id="u")
    raw = _part(AssertionMinter(keyset).mint(s, "h").jwt, 1)
    assert b'"groups":[]' in raw
    assert b"null" not in raw


def test_empty_subject_refused(keyset: KeySet) -> None:
    with pytest.raises(Unauthenticated):
        AssertionMinter(keyset).mint(Session(id="s", user_id=""), "h")


def test_jti_unique_per_signature(keyset: KeySet, session: Session) -> None:
    m = AssertionMinter(keyset)
    jtis = {_claims(m.sign(session, "h").jwt)["jti"] for _ in range(20)}
    assert len(jtis) == 20


def test_claim_headers_and_extra_claims(keyset: KeySet, session: Session) -> None:
    spec = AssertionSpec.build(
        "hostOnly",
        {
            "X-Pomerium-Claim-Email": "email",
            "X-Pomerium-Claim-Groups": "groups",
            "X-Pomerium-Claim-Department": "department",
            "X-Pomerium-Claim-Roles": "roles",
            "X-Pomerium-Claim-Missing": "nope",
        },
    )
    a = AssertionMinter(keyset).mint(session, "h", spec)
    assert a.claim_headers == (
        ("X-Pomerium-Claim-Email", "ada@example.com"),
        ("X-Pomerium-Claim-Groups", "eng,admins"),
        ("X-Pomerium-Claim-Department", "R&D"),
        ("X-Pomerium-Claim-Roles", "a,b"),
        ("X-Pomerium-Claim-Missing", ""),  # a claim the user lacks: empty, as Pomerium
    )
    c = _claims(a.jwt)
    assert c["department"] == "R&D"
    assert c["roles"] == ["a", "b"]  # lists stay lists in the token
    assert "nope" not in c
    assert a.headers()[0] == (ASSERTION_HEADER, a.jwt)


def test_claims_headers_from_config_forms(keyset: KeySet, session: Session) -> None:
    opts = options("jwt_claims_headers: email,groups\n")
    assert opts.jwt_claims_headers == {
        "X-Pomerium-Claim-Email": "email",
        "X-Pomerium-Claim-Groups": "groups",
    }
    route = options(
        "routes:\n  - from: http://a.example.com\n    to: http://127.0.0.1:1\n"
        "    jwt_issuer_format: uri\n"
    )
    spec = AssertionSpec.for_route(route, route.routes[0])
    assert spec.issuer_format == "uri"


def test_base_claims_not_overridden_by_session_claims(keyset: KeySet) -> None:
    s = Session(
        id="s",
        user_id="u",
        email="real@x",
        claims=MappingProxyType({"email": "fake@x", "iss": "evil"}),
    )
    spec = AssertionSpec.build("hostOnly", {"X-E": "email", "X-I": "iss"})
    a = AssertionMinter(keyset).mint(s, "h", spec)
    assert dict(a.claim_headers) == {"X-E": "real@x", "X-I": "h"}
    assert _claims(a.jwt)["email"] == "real@x"


def test_header_values_have_no_control_characters() -> None:
    assert claim_header_value("a\r\nX-Injected: 1") == "aX-Injected: 1"
    assert claim_header_value(["a", "b\n", 3, True, None]) == "a,b,3,true"
    assert claim_header_value({"k": [1]}) == '{"k":[1]}'
    assert claim_header_value(None) is None


def test_spec_validation() -> None:
    with pytest.raises(ConfigError):
        AssertionSpec.build("hostOnly", {"Bad Header": "email"})
    with pytest.raises(ConfigError):
        AssertionSpec.build("weird")  # type: ignore[arg-type]


def test_groups_filter(keyset: KeySet, session: Session) -> None:
    spec = AssertionSpec.build("hostOnly", {}, ["admins", "other"])
    assert _claims(AssertionMinter(keyset).mint(session, "h", spec).jwt)["groups"] == ["admins"]


def test_strip_port() -> None:
    assert strip_port("A.example.com:8443") == "a.example.com"
    assert strip_port("[::1]:8443") == "[::1]"
    assert strip_port("host") == "host"


# -- cache ----------------------------------------------------------------------------------


def test_cache_reuses_until_half_life(keyset: KeySet, session: Session) -> None:
    clock = Clock()
    m = AssertionMinter(keyset, clock=clock)
    first = m.mint(session, "h")
    clock.t = NOW + 149
    assert m.mint(session, "h") is first
    clock.t = NOW + 150
    second = m.mint(session, "h")
    assert second is not first and second.issued_at == int(NOW + 150)


def test_cache_keys_host_spec_and_session(keyset: KeySet, session: Session) -> None:
    m = AssertionMinter(keyset, clock=Clock())
    a = m.mint(session, "h")
    assert m.mint(session, "other") is not a
    assert m.mint(session, "h", AssertionSpec.build("uri")) is not a
    assert m.mint(dataclasses.replace(session, id="sess-2"), "h") is not a
    assert m.mint(session, "h") is a
    # An equal record loaded again (another object) still hits.
    assert m.mint(dataclasses.replace(session), "h") is a


def test_cache_misses_when_session_changes(keyset: KeySet, session: Session) -> None:
    m = AssertionMinter(keyset, clock=Clock())
    a = m.mint(session, "h")
    refreshed = dataclasses.replace(session, groups=("eng",), last_refresh_at=NOW)
    b = m.mint(refreshed, "h")
    assert b is not a and _claims(b.jwt)["groups"] == ["eng"]


def test_cache_clock_going_back_resigns(keyset: KeySet, session: Session) -> None:
    clock = Clock()
    m = AssertionMinter(keyset, clock=clock)
    a = m.mint(session, "h")
    clock.t = NOW - 10
    assert m.mint(session, "h") is not a


def test_cache_bounded_lru(keyset: KeySet, session: Session) -> None:
    probe = AssertionMinter(keyset, clock=Clock())
    probe.mint(session, "h0")
    m = AssertionMinter(keyset, clock=Clock(), cache_max_bytes=3 * probe.cache_bytes)
    a = m.mint(session, "h0")
    b = m.mint(session, "h1")
    m.mint(session, "h2")
    assert m.mint(session, "h0") is a  # refreshes h0's recency
    m.mint(session, "h3")  # evicts h1, the least recently used
    assert len(m) == 3
    assert m.mint(session, "h0") is a
    assert m.mint(session, "h1") is not b  # h1 was evicted: signed again
    m.forget_session(session.id)
    assert len(m) == 0 and m.cache_bytes == 0
    assert m.mint(session, "h0") is not a


def test_cache_budget_matches_measured_memory(keyset: KeySet) -> None:
    """The bytes charged per assertion are what tracemalloc sees the cache keep alive."""
    import tracemalloc

    sessions = [
        Session(id=f"s{i}", user_id=f"u{i}", email=f"u{i}@example.com", groups=("a", "b"))
        for i in range(3000)
    ]
    m = AssertionMinter(keyset, clock=Clock())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for s in sessions:
            m.mint(s, "app.example.com")
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.8 < m.cache_bytes / measured < 1.25, (m.cache_bytes, measured)


def test_cache_resigns_when_signer_rotates(ec_pem: str, ec_pem2: str, session: Session) -> None:
    from datetime import UTC, datetime

    t = datetime.fromtimestamp(NOW + 60, UTC).isoformat()
    ks = load_keyset(
        options(
            f"signing_key: {b64(ec_pem)}\n"
            f"signing_keys:\n  - key: {b64(ec_pem2)}\n    sign_from: '{t}'\n"
        )
    )
    clock = Clock()
    m = AssertionMinter(ks, clock=clock)
    a = m.mint(session, "h")
    clock.t = NOW + 61
    b = m.mint(session, "h")
    assert a.kid != b.kid and _header(b.jwt)["kid"] == b.kid


def test_reloaded_config_keeps_cached_assertions(
    ec_pem: str, ec_pem2: str, session: Session
) -> None:
    """A reload (new minter) reuses the tokens signed before it while the signing key is
    unchanged, and signs again once the new config's key is another one."""
    clock = Clock()
    same = load_keyset(options(f"signing_key: {b64(ec_pem)}\n"))
    first = AssertionMinter(same, clock=clock)
    a = first.mint(session, "h")
    reloaded = first.for_config(load_keyset(options(f"signing_key: {b64(ec_pem)}\n")), 1 << 20)
    assert reloaded.mint(session, "h") is a
    rekeyed = reloaded.for_config(load_keyset(options(f"signing_key: {b64(ec_pem2)}\n")), 1 << 20)
    b = rekeyed.mint(session, "h")
    assert b is not a and b.kid != a.kid
    rekeyed.forget_session(session.id)
    assert len(first) == 0  # one cache for all of them
