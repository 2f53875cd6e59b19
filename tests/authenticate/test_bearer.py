"""IdP bearer tokens as sessions (``bearer_token_format``), against a real OpenID provider.

The tokens are real: an ID token and an (opaque) access token issued by panva's
oidc-provider through a completed code flow; forgeries are made from them. The keys,
the userinfo endpoint and the clock checks are the provider's and gatehouse's own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import RSAKey

from gatehouse.authenticate.bearer import (
    IDP_ACCESS_TOKEN,
    IDP_IDENTITY_TOKEN,
    REFUSAL_TTL_S,
    BearerRule,
    BearerSessions,
    bearer_token,
)
from gatehouse.authenticate.errors import IdpUnavailable
from gatehouse.authenticate.flow import Authenticator
from gatehouse.authenticate.redirects import RedirectSigner
from gatehouse.authenticate.relying_party import Identity, RelyingParty
from gatehouse.authenticate.state import StateCodec
from gatehouse.errors import InvalidBearerToken

from .conftest import ProviderProcess, browser_login, make_rp, run_provider

pytestmark = pytest.mark.anyio

SECRET = b"s" * 32
ID_RULE = BearerRule(route="api", format=IDP_IDENTITY_TOKEN, idp_id="")
AT_RULE = BearerRule(route="api", format=IDP_ACCESS_TOKEN, idp_id="")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def signed_in(rp: RelyingParty) -> Identity:
    """A real sign-in of alice: the IdP's ID token and access token."""
    auth = Authenticator(
        rp, StateCodec(SECRET), RedirectSigner(SECRET), lambda: ["app.example.com"]
    )
    start = await auth.sign_in(
        auth.signer.sign_in_url("https://authenticate.example.com", "https://app.example.com/"),
        None,
    )
    callback = await browser_login(start.authorization_url)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}

    async def once(key: str, ttl_s: float) -> bool:
        return True

    done = await auth.callback(params, start.csrf_cookie_value, once)
    return done.identity


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderProcess]:
    """The provider with the user's claims in the ID token (as most IdPs send them)."""
    with run_provider(ID_TOKEN_CLAIMS="1") as p:
        yield p


@pytest.fixture
async def alice(rp: RelyingParty) -> Identity:
    return await signed_in(rp)


def sessions(rp: RelyingParty, **kw: object) -> BearerSessions:
    return BearerSessions(lambda idp_id: rp, {0: ID_RULE}, **kw)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_payload(token: str, **over: object) -> str:
    """``token`` with claims changed and its original signature (a forgery)."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims.update(over)
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


async def idp_kid(rp: RelyingParty) -> str:
    keys = await rp.discovery.keys()
    return str(keys[0].kid)


def test_bearer_token_parsing() -> None:
    assert bearer_token(b"Bearer abc.def") == "abc.def"
    assert bearer_token(b"bearer   abc ") == "abc"
    assert bearer_token(b"BEARER abc") == "abc"
    assert bearer_token(b"Bearer ") == ""
    assert bearer_token(b"Basic YTpi") is None
    assert bearer_token(b"Pomerium abc") is None
    # gatehouse's own programmatic token keeps its meaning.
    assert bearer_token(b"Bearer Pomerium-abc") is None


async def test_id_token_becomes_the_session(rp: RelyingParty, alice: Identity) -> None:
    store = sessions(rp)
    session = await store.session(ID_RULE, alice.id_token)
    assert session.email == "alice@example.com"
    assert session.user_id == "alice"
    assert session.groups == ("admins", "staff")
    assert session.claims["aud"] == "gatehouse"
    assert session.expires_at == session.claims["exp"]
    assert session.refresh_token == ""  # never refreshed
    # Kept in memory only (never stored) so ${pomerium.id_token} can forward it.
    assert session.id_token == alice.id_token
    assert session.access_token == ""
    # Cached: the next requests are answered without a verification.
    assert store.cached(ID_RULE, alice.id_token) == (True, session)
    assert await store.session(ID_RULE, alice.id_token) is session
    assert store.verifications == 1


async def test_concurrent_first_requests_share_one_verification(
    rp: RelyingParty, alice: Identity
) -> None:
    store = sessions(rp)
    results = await asyncio.gather(*(store.session(ID_RULE, alice.id_token) for _ in range(8)))
    assert all(r is results[0] for r in results)
    assert store.verifications == 1


async def test_expired_id_token_refused(
    provider: ProviderProcess, http: httpx.AsyncClient, alice: Identity
) -> None:
    clock = Clock()
    late = make_rp(provider.issuer, http)
    late._clock = clock  # the RP's clock: the token is checked an hour later
    clock.now += 3600
    store = sessions(late, clock=clock)
    with pytest.raises(InvalidBearerToken):
        await store.session(ID_RULE, alice.id_token)


async def test_cached_session_ends_with_the_token(rp: RelyingParty, alice: Identity) -> None:
    clock = Clock()
    store = sessions(rp, clock=clock)
    session = await store.session(ID_RULE, alice.id_token)
    clock.now = session.expires_at
    assert store.cached(ID_RULE, alice.id_token) == (False, None)


@pytest.mark.parametrize(
    "change",
    [
        {"email": "mallory@example.com"},
        {"sub": "bob"},
        {"aud": "other-client"},
        {"iss": "https://evil.example.com"},
        {"exp": 4_000_000_000},
    ],
)
async def test_tampered_id_token_refused(
    rp: RelyingParty, alice: Identity, change: dict[str, object]
) -> None:
    with pytest.raises(InvalidBearerToken):
        await sessions(rp).session(ID_RULE, with_payload(alice.id_token, **change))


async def test_forged_signature_with_the_idps_kid(
    rp: RelyingParty, alice: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    kid = await idp_kid(rp)
    claims = json.loads(unb64(alice.id_token.split(".")[1]))
    ours = RSAKey.generate_key(2048, parameters={"kid": kid})
    forged = jwt.encode({"alg": "RS256", "kid": kid}, claims, ours)
    caplog.set_level("INFO", "gatehouse")
    with pytest.raises(InvalidBearerToken) as info:
        await sessions(rp).session(ID_RULE, forged)
    assert info.value.status == 403
    # One log line, with the reason and without the token.
    (record,) = [r for r in caplog.records if r.name.startswith("gatehouse")]
    assert record.getMessage() == "bearer token refused"
    assert "signature" in record.why  # type: ignore[attr-defined]
    assert forged not in caplog.text and forged.split(".")[2] not in str(record.__dict__)


async def test_alg_none_refused(rp: RelyingParty, alice: Identity) -> None:
    payload = alice.id_token.split(".")[1]
    header = b64(json.dumps({"alg": "none"}).encode())
    with pytest.raises(InvalidBearerToken):
        await sessions(rp).session(ID_RULE, f"{header}.{payload}.")


async def test_hs256_with_the_idps_public_key_refused(rp: RelyingParty, alice: Identity) -> None:
    # Key confusion: an HMAC over the token keyed with the IdP's public key (anyone can
    # fetch it). HMAC ID tokens are checked with the client secret only (Core §10.1).
    keys = await rp.discovery.keys()
    public = keys[0].get_op_key("verify")
    for pem in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(keys[0].as_dict()).encode(),
    ):
        header = b64(json.dumps({"alg": "HS256", "kid": keys[0].kid}).encode())
        payload = alice.id_token.split(".")[1]
        mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidBearerToken):
            await sessions(rp).session(ID_RULE, f"{header}.{payload}.{b64(mac)}")


async def test_id_token_of_another_client_refused(
    provider: ProviderProcess, http: httpx.AsyncClient, alice: Identity
) -> None:
    # The route's client decides the audience: a token for "gatehouse" is not one for it.
    other = make_rp(provider.issuer, http)
    other.config = replace(other.config, client_id="another-client")
    with pytest.raises(InvalidBearerToken):
        await sessions(other).session(ID_RULE, alice.id_token)


@pytest.mark.parametrize(
    "token", ["", "garbage", "a.b.c", "....", "\u00e9.\u00e9.\u00e9", "x" * 20_000, "e30.e30.e30"]
)
async def test_garbage_refused(rp: RelyingParty, token: str) -> None:
    with pytest.raises(InvalidBearerToken):
        await sessions(rp).session(ID_RULE, token)


async def test_refusal_cached_then_checked_again(rp: RelyingParty) -> None:
    clock = Clock()
    store = sessions(rp, clock=clock)
    with pytest.raises(InvalidBearerToken):
        await store.session(ID_RULE, "garbage")
    with pytest.raises(InvalidBearerToken):
        store.cached(ID_RULE, "garbage")
    assert store.verifications == 1
    clock.now += REFUSAL_TTL_S
    assert store.cached(ID_RULE, "garbage") == (False, None)


async def test_access_token_through_userinfo(rp: RelyingParty, alice: Identity) -> None:
    store = BearerSessions(lambda idp_id: rp, {0: AT_RULE})
    session = await store.session(AT_RULE, alice.access_token)
    assert (session.user_id, session.email) == ("alice", "alice@example.com")
    # The ID token is no access token: userinfo refuses it.
    with pytest.raises(InvalidBearerToken):
        await store.session(AT_RULE, alice.id_token)
    with pytest.raises(InvalidBearerToken):
        await store.session(AT_RULE, alice.access_token + "x")
    # Bytes no bearer token holds are refused before any request to the IdP.
    for token in ("caf\u00e9", "a b", "a\tb", "a,b", alice.access_token + "\u00ff"):
        with pytest.raises(InvalidBearerToken):
            await store.session(AT_RULE, token)


async def test_opaque_access_token_refused_when_audiences_are_set(
    rp: RelyingParty, alice: Identity
) -> None:
    # Allowed audiences can only be checked in a JWT: an opaque token fails closed.
    rule = BearerRule(route="api", format=IDP_ACCESS_TOKEN, idp_id="", audiences=("api://x",))
    store = BearerSessions(lambda idp_id: rp, {0: rule})
    with pytest.raises(InvalidBearerToken):
        await store.session(rule, alice.access_token)


async def test_same_token_other_rule_is_verified_apart(rp: RelyingParty, alice: Identity) -> None:
    store = BearerSessions(lambda idp_id: rp, {0: ID_RULE, 1: AT_RULE})
    await store.session(ID_RULE, alice.id_token)
    assert store.cached(AT_RULE, alice.id_token) == (False, None)


async def test_cache_bounded_by_memory(rp: RelyingParty, alice: Identity) -> None:
    budget = 64 * 1024
    store = sessions(rp, cache_max_bytes=budget)
    await store.session(ID_RULE, alice.id_token)
    # A flood of bad tokens (anyone can send them) stays within its own eighth of the
    # budget and never evicts a real user's token.
    for i in range(400):
        with pytest.raises(InvalidBearerToken):
            await store.session(ID_RULE, f"garbage-{i}")
    assert store.cached_bytes <= budget + budget // 8
    assert 1 < len(store) < 400
    assert store.cached(ID_RULE, alice.id_token)[0]
    assert store.cached(ID_RULE, "garbage-0") == (False, None)  # the oldest: evicted
    with pytest.raises(InvalidBearerToken):
        store.cached(ID_RULE, "garbage-399")  # the newest: still refused from the cache


async def test_idp_down_is_503_and_not_cached(http: httpx.AsyncClient, alice: Identity) -> None:
    down = make_rp("http://127.0.0.1:9", http)  # nothing listens on the discard port
    store = sessions(down)
    with pytest.raises(IdpUnavailable):
        await store.session(ID_RULE, alice.id_token)
    assert len(store) == 0
