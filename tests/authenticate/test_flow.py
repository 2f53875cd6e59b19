"""The whole code flow against a real OpenID provider (panva's oidc-provider), and the
attacks on it, driven through :class:`Authenticator` and :class:`RelyingParty`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import OctKey, RSAKey

from gatehouse.authenticate.discovery import Discovery
from gatehouse.authenticate.errors import (
    AuthenticationError,
    AuthorizationDenied,
    IdpUnavailable,
    InvalidIdToken,
    InvalidRedirect,
    InvalidState,
    TokenRequestRejected,
)
from gatehouse.authenticate.flow import Authenticator
from gatehouse.authenticate.oidc import ClientConfig
from gatehouse.authenticate.providers import quirks_for
from gatehouse.authenticate.redirects import RedirectSigner
from gatehouse.authenticate.relying_party import Identity, RelyingParty
from gatehouse.authenticate.state import StateCodec

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    POST_LOGOUT_URI,
    REDIRECT_URI,
    ProviderProcess,
    browser_login,
    make_rp,
    run_provider,
)

pytestmark = pytest.mark.anyio

SECRET = b"s" * 32
APP_URL = "https://app.example.com/some/page?x=1"
ALLOWED = ["app.example.com", "*.corp.example.com", "authenticate.example.com"]


class MemoryOnce:
    """Stands in for the session store's ``consume_once`` (a set with no expiry)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def __call__(self, key: str, ttl_s: float) -> bool:
        assert ttl_s > 0
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def authenticator(rp: RelyingParty) -> Authenticator:
    return Authenticator(rp, StateCodec(SECRET), RedirectSigner(SECRET), lambda: ALLOWED)


async def sign_in(auth: Authenticator, *, csrf: str | None = None) -> tuple[dict[str, str], str]:
    """Run sign-in and the browser's trip through the IdP: (callback params, csrf cookie)."""
    start = await auth.sign_in(
        auth.signer.sign_in_url("https://authenticate.example.com", APP_URL), csrf
    )
    callback = await browser_login(start.authorization_url)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    return params, start.csrf_cookie_value


async def identity_of(rp: RelyingParty) -> Identity:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    return (await auth.callback(params, csrf, MemoryOnce())).identity


def claims_of(token: str) -> dict[str, object]:
    return json.loads(jws.extract_compact(token.encode()).payload)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the happy path ----------------------------------------------------------------------


async def test_full_code_flow(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    start = await auth.sign_in(
        auth.signer.sign_in_url("https://authenticate.example.com", APP_URL), None
    )
    query = parse_qs(urlsplit(start.authorization_url).query)
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [REDIRECT_URI]
    assert query["login_hint"] == ["alice"]  # idp_request_params
    assert query["scope"] == ["openid profile email groups offline_access"]
    assert len(query["nonce"][0]) >= 32
    # The PKCE verifier travels sealed: it appears nowhere in the URL.
    assert "code_verifier" not in query

    callback = await browser_login(start.authorization_url)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert params["iss"] == rp.discovery.provider_url  # RFC 9207, checked by parse_callback
    result = await auth.callback(params, start.csrf_cookie_value, MemoryOnce())

    assert result.redirect_url == APP_URL
    ident = result.identity
    assert ident.user_id == "alice"
    assert ident.email == "alice@example.com"
    assert ident.name == "Alice Example"
    assert ident.groups == ("admins", "staff")
    assert ident.claims["email_verified"] is True
    assert ident.refresh_token and ident.access_token and ident.id_token
    assert ident.tokens_expire_at > time.time()
    # oidc-provider keeps profile claims out of the ID token: they came from userinfo.
    assert "email" not in claims_of(ident.id_token)

    session = ident.to_session("sid-1", now=1000.0, expires_at=2000.0)
    assert session.user_id == "alice" and session.groups == ("admins", "staff")
    assert session.refresh_token == ident.refresh_token


async def test_sign_in_for_another_user(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    start = await auth.begin(APP_URL, None)
    callback = await browser_login(start.authorization_url, login_hint="bob")
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    ident = (await auth.callback(params, start.csrf_cookie_value, MemoryOnce())).identity
    assert (ident.user_id, ident.groups) == ("bob", ())


async def test_client_secret_post(http: httpx.AsyncClient) -> None:
    methods = {
        "CLIENT_AUTH_METHODS": "client_secret_post",
        "TOKEN_AUTH_METHOD": "client_secret_post",
    }
    with run_provider(**methods) as p:
        ident = await identity_of(make_rp(p.issuer, http))
    assert ident.user_id == "alice"


async def test_hmac_signed_id_token(http: httpx.AsyncClient) -> None:
    with run_provider(ID_TOKEN_ALG="HS256") as p:
        rp = make_rp(p.issuer, http)
        ident = await identity_of(rp)
        assert jws.extract_compact(ident.id_token.encode()).headers()["alg"] == "HS256"
        assert ident.user_id == "alice"
        # The same claims, signed with a secret that is not the client secret.
        forged = jwt.encode(
            {"alg": "HS256"}, claims_of(ident.id_token), OctKey.import_key(b"w" * 48)
        )
        with pytest.raises(InvalidIdToken):
            await rp.validate_id_token(forged, nonce=str(claims_of(ident.id_token)["nonce"]))


# -- refresh, revocation, sign-out -------------------------------------------------------


async def test_refresh(rp: RelyingParty) -> None:
    ident = await identity_of(rp)
    fresh = await rp.refresh(ident)
    assert fresh.access_token != ident.access_token
    assert fresh.user_id == "alice" and fresh.groups == ("admins", "staff")
    assert fresh.refresh_token  # kept or rotated
    # Refreshing from a stored session record works the same way.
    again = await rp.refresh(fresh.to_session("sid", now=0.0, expires_at=1.0))
    assert again.email == "alice@example.com"


async def test_revoked_refresh_token_cannot_refresh(rp: RelyingParty) -> None:
    ident = await identity_of(rp)
    assert await rp.revoke(ident.refresh_token) is True
    with pytest.raises(TokenRequestRejected) as info:
        await rp.refresh(ident)
    assert info.value.error == "invalid_grant"


async def test_sign_out_revokes_and_builds_end_session_url(
    rp: RelyingParty, provider: ProviderProcess
) -> None:
    auth = authenticator(rp)
    ident = await identity_of(rp)
    session = ident.to_session("sid", now=0.0, expires_at=1.0)
    url = await auth.sign_out(session, POST_LOGOUT_URI)
    assert url is not None
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == provider.issuer + "/session/end"
    query = parse_qs(parts.query)
    assert query["id_token_hint"] == [ident.id_token]
    assert query["post_logout_redirect_uri"] == [POST_LOGOUT_URI]
    assert query["client_id"] == [CLIENT_ID]
    # The IdP accepts it (its logout confirmation page), and refuses an unregistered target.
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(url)).status_code == 200
        bad = url.replace("signed_out", "elsewhere")
        assert (await browser.get(bad)).status_code == 400
    with pytest.raises(TokenRequestRejected):
        await rp.refresh(ident)


# -- attacks on the callback ---------------------------------------------------------------


async def test_tampered_state(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    state = params["state"]
    flipped = state[:20] + ("A" if state[20] != "A" else "B") + state[21:]
    with pytest.raises(InvalidState):
        await auth.callback({**params, "state": flipped}, csrf, MemoryOnce())
    with pytest.raises(InvalidState):
        await auth.callback({**params, "state": "attacker-chosen"}, csrf, MemoryOnce())
    with pytest.raises(InvalidState):
        await auth.callback({k: v for k, v in params.items() if k != "state"}, csrf, MemoryOnce())


async def test_state_from_another_browser(rp: RelyingParty) -> None:
    """Login CSRF: the attacker's callback URL, opened in the victim's browser."""
    auth = authenticator(rp)
    params, _attacker_csrf = await sign_in(auth)
    _, victim_csrf, _ = StateCodec(SECRET).begin(APP_URL)
    with pytest.raises(InvalidState):
        await auth.callback(params, victim_csrf, MemoryOnce())
    with pytest.raises(InvalidState):
        await auth.callback(params, None, MemoryOnce())


async def test_expired_state(rp: RelyingParty) -> None:
    now = [time.time()]
    auth = Authenticator(
        rp, StateCodec(SECRET, clock=lambda: now[0]), RedirectSigner(SECRET), lambda: ALLOWED
    )
    params, csrf = await sign_in(auth)
    now[0] += 601
    with pytest.raises(InvalidState):
        await auth.callback(params, csrf, MemoryOnce())


async def test_state_replay(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    once = MemoryOnce()
    await auth.callback(params, csrf, once)
    with pytest.raises(InvalidState):
        await auth.callback(params, csrf, once)


async def test_code_replay(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    txn = auth.states.open(params["state"], csrf)
    await rp.redeem_code(params["code"], code_verifier=txn.code_verifier, nonce=txn.nonce)
    with pytest.raises(TokenRequestRejected) as info:
        await rp.redeem_code(params["code"], code_verifier=txn.code_verifier, nonce=txn.nonce)
    assert info.value.error == "invalid_grant"
    assert info.value.status == 401


async def test_wrong_pkce_verifier(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    txn = auth.states.open(params["state"], csrf)
    with pytest.raises(TokenRequestRejected):
        await rp.redeem_code(params["code"], code_verifier="x" * 64, nonce=txn.nonce)


async def test_nonce_mismatch(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    txn = auth.states.open(params["state"], csrf)
    with pytest.raises(InvalidIdToken):
        await rp.redeem_code(params["code"], code_verifier=txn.code_verifier, nonce="other-nonce")


async def test_idp_error_callback(rp: RelyingParty, provider: ProviderProcess) -> None:
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    denied = {"state": params["state"], "iss": params["iss"], "error": "access_denied"}
    with pytest.raises(AuthorizationDenied):
        await auth.callback(denied, csrf, MemoryOnce())


async def test_callback_from_another_issuer(rp: RelyingParty) -> None:
    """RFC 9207 mix-up defence: an ``iss`` that is not our IdP's."""
    auth = authenticator(rp)
    params, csrf = await sign_in(auth)
    with pytest.raises(InvalidState):
        await auth.callback({**params, "iss": "https://evil.example"}, csrf, MemoryOnce())
    with pytest.raises(InvalidState):
        params2, csrf2 = await sign_in(auth)
        del params2["iss"]
        await auth.callback(params2, csrf2, MemoryOnce())


async def test_unsigned_or_foreign_sign_in_url_refused(rp: RelyingParty) -> None:
    auth = authenticator(rp)
    with pytest.raises(InvalidRedirect):
        await auth.sign_in(
            "https://authenticate.example.com/.pomerium/sign_in?pomerium_redirect_uri=" + APP_URL,
            None,
        )
    signed = auth.signer.sign_in_url("https://authenticate.example.com", "https://evil.example/")
    with pytest.raises(InvalidRedirect):
        await auth.sign_in(signed, None)


# -- attacks on the ID token -------------------------------------------------------------


async def test_forged_id_token_same_kid(rp: RelyingParty) -> None:
    ident = await identity_of(rp)
    header = jws.extract_compact(ident.id_token.encode()).headers()
    claims = claims_of(ident.id_token)
    forged = jwt.encode({"alg": "RS256", "kid": header["kid"]}, claims, RSAKey.generate_key(2048))
    with pytest.raises(InvalidIdToken):
        await rp.validate_id_token(forged, nonce=str(claims["nonce"]))


async def test_forged_id_token_unknown_kid_refetches_once(
    provider: ProviderProcess, http: httpx.AsyncClient
) -> None:
    rp = make_rp(provider.issuer, http)
    ident = await identity_of(rp)
    claims = claims_of(ident.id_token)
    jwks_calls = []
    real_get = http.get

    async def counting_get(url: str, **kw: object) -> httpx.Response:
        if url.endswith("/jwks"):
            jwks_calls.append(url)
        return await real_get(url, **kw)  # type: ignore[arg-type]

    rp.discovery._min_refetch_s = 0.0  # allow the refetch now
    http.get = counting_get  # type: ignore[method-assign]
    try:
        forged = jwt.encode({"alg": "RS256", "kid": "attacker"}, claims, RSAKey.generate_key(2048))
        with pytest.raises(InvalidIdToken):
            await rp.validate_id_token(forged, nonce=str(claims["nonce"]))
        assert 1 <= len(jwks_calls) <= 2
        # Rate limited: with the default spacing a second forged token causes no fetch.
        rp.discovery._min_refetch_s = 30.0
        jwks_calls.clear()
        with pytest.raises(InvalidIdToken):
            await rp.validate_id_token(forged, nonce=str(claims["nonce"]))
        assert jwks_calls == []
    finally:
        del http.get


async def test_expired_id_token(provider: ProviderProcess, http: httpx.AsyncClient) -> None:
    ident = await identity_of(make_rp(provider.issuer, http))
    claims = claims_of(ident.id_token)
    late = make_rp(provider.issuer, http)
    late._clock = lambda: float(claims["exp"]) + 61  # type: ignore[arg-type]  # past the leeway
    with pytest.raises(InvalidIdToken):
        await late.validate_id_token(ident.id_token, nonce=str(claims["nonce"]))
    # Within the leeway it is still fine.
    late._clock = lambda: float(claims["exp"]) + 30  # type: ignore[arg-type]
    await late.validate_id_token(ident.id_token, nonce=str(claims["nonce"]))


async def test_alg_none(rp: RelyingParty) -> None:
    ident = await identity_of(rp)
    claims = claims_of(ident.id_token)
    unsigned = b64(b'{"alg":"none"}') + "." + b64(json.dumps(claims).encode()) + "."
    with pytest.raises(InvalidIdToken):
        await rp.validate_id_token(unsigned, nonce=str(claims["nonce"]))
    # Even with a signature part appended.
    with pytest.raises(InvalidIdToken):
        await rp.validate_id_token(unsigned + "c2ln", nonce=str(claims["nonce"]))


async def test_hmac_token_when_idp_signs_with_rsa(rp: RelyingParty) -> None:
    """Key confusion: HS256 with the IdP's public key as the HMAC secret must fail (HMAC is
    only ever keyed with the client secret, never with a JWKS key)."""
    ident = await identity_of(rp)
    claims = claims_of(ident.id_token)
    keys = await rp.discovery.keys()
    public_pem = keys[0].as_pem(private=False)
    kid = keys[0].kid or ""
    signing_input = (
        b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = signing_input + "." + b64(mac)
    with pytest.raises(InvalidIdToken):
        await rp.validate_id_token(confused, nonce=str(claims["nonce"]))


async def test_wrong_audience(provider: ProviderProcess, http: httpx.AsyncClient) -> None:
    ident = await identity_of(make_rp(provider.issuer, http))
    claims = claims_of(ident.id_token)
    config = ClientConfig(
        client_id="another-client", client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI
    )
    other = RelyingParty(config, Discovery(provider.issuer, quirks_for("oidc"), http), http)
    with pytest.raises(InvalidIdToken):
        await other.validate_id_token(ident.id_token, nonce=str(claims["nonce"]))


# -- the IdP is down -----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_idp_unreachable(http: httpx.AsyncClient) -> None:
    rp = make_rp(f"http://127.0.0.1:{closed_port()}", http)
    auth = authenticator(rp)
    with pytest.raises(IdpUnavailable) as info:
        await auth.begin(APP_URL, None)
    assert info.value.status == 503
    assert not isinstance(info.value, AuthenticationError)


async def test_idp_unreachable_on_sign_out_still_returns(http: httpx.AsyncClient) -> None:
    rp = make_rp(f"http://127.0.0.1:{closed_port()}", http)
    session = Identity("u", "", "", (), {}, "t", "a", "r").to_session("s", now=0, expires_at=1)
    assert await authenticator(rp).sign_out(session, POST_LOGOUT_URI) is None


# -- from the options, as the lead builds it ---------------------------------------------------


async def test_build_authenticator_from_options(provider: ProviderProcess) -> None:
    from gatehouse.authenticate import build_authenticator, new_http_client
    from gatehouse.config import load_text

    options = load_text(
        f"""
insecure_server: true
authenticate_service_url: https://authenticate.example.com
idp_provider: oidc
idp_provider_url: {provider.issuer}
idp_client_id: {CLIENT_ID}
idp_client_secret: {CLIENT_SECRET}
idp_scopes: [openid, profile, email, groups, offline_access]
idp_request_params: {{login_hint: alice, prompt: consent}}
routes:
  - from: https://app.example.com
    to: http://127.0.0.1:9
  - from: https://*.corp.example.com
    to: http://127.0.0.1:9
""",
        env={},
    ).options
    async with new_http_client() as client:
        auth = build_authenticator(options, shared_secret=SECRET, client=client)
        assert auth.relying_party.config.redirect_uri == REDIRECT_URI
        start = await auth.begin("https://wiki.corp.example.com/x", None)
        callback = await browser_login(start.authorization_url)
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        done = await auth.callback(params, start.csrf_cookie_value, MemoryOnce())
        assert done.redirect_url == "https://wiki.corp.example.com/x"
        assert done.identity.groups == ("admins", "staff")
        with pytest.raises(InvalidRedirect):
            await auth.begin("https://elsewhere.example.com/", None)
