"""API access with IdP bearer tokens (``bearer_token_format``), end to end.

A real ``gatehouse run``, a real upstream and panva's oidc-provider. The tokens are the
provider's own, obtained here the way an API client (a CLI, a service) gets them: a code
flow with PKCE for gatehouse's client, the token response read with plain httpx. The
request is then made with curl and ``Authorization: Bearer``: no cookie, no sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from authenticate.conftest import CLIENT_ID, CLIENT_SECRET, ProviderProcess, run_provider
from e2e.conftest import AUTH_URL, sso_config
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

API = "http://api.localhost"
AT = "http://at.localhost"
OPEN = "http://open.localhost"
PUBLIC = "http://public.localhost"
SECOND = "http://second.localhost"
RELAY = "http://relay.localhost"
SECOND_ID = "gatehouse-second"
SECOND_SECRET = "second-client-secret-0123456789abcdef-0123456789"
ALICE_ONLY = [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}]


@pytest.fixture(scope="module")
def idp() -> Iterator[ProviderProcess]:
    """The provider, with the user's claims in its ID tokens (as most IdPs send them)."""
    with run_provider(
        REDIRECT_URIS=f"{AUTH_URL}/oauth2/callback",
        POST_LOGOUT_REDIRECT_URIS=f"{AUTH_URL}/.pomerium/signed_out",
        EXTRA_CLIENTS=f"{SECOND_ID}:{SECOND_SECRET}",
        ID_TOKEN_CLAIMS="1",
    ) as p:
        yield p


def tokens(idp: ProviderProcess, user: str = "alice") -> dict[str, Any]:
    """The provider's token response for ``user`` and gatehouse's client."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    redirect_uri = f"{AUTH_URL}/oauth2/callback"
    with httpx.Client(timeout=10) as client:
        meta = client.get(f"{idp.issuer}/.well-known/openid-configuration").json()
        url = str(
            httpx.URL(meta["authorization_endpoint"]).copy_merge_params(
                {
                    "client_id": CLIENT_ID,
                    "response_type": "code",
                    "redirect_uri": redirect_uri,
                    "scope": "openid email profile groups",
                    "state": "st",
                    "nonce": "no",
                    "login_hint": user,
                    "prompt": "consent",
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                }
            )
        )
        for _ in range(20):
            r = client.get(url)
            assert r.status_code in (302, 303), r.text[:300]
            url = str(httpx.URL(url).join(r.headers["location"]))
            if url.startswith(redirect_uri):
                break
        code = httpx.URL(url).params["code"]
        r = client.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def curl(gh: GatehouseProcess, origin: str, path: str, token: str | None) -> tuple[int, str]:
    """One request with curl: (status, body)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    host = origin.split("://", 1)[1]
    command = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]
    command += ["-H", f"Host: {host}", "-H", "Accept: application/json"]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{gh.port}{path}"],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def assertion_claims(gh: GatehouseProcess, token: str, host: str) -> dict[str, Any]:
    jwks = jwt.PyJWKClient(
        f"http://127.0.0.1:{gh.port}/.well-known/pomerium/jwks.json", headers={"Host": host}
    )
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience=host, issuer=host
    )
    return claims


def forged(token: str, **over: object) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(over)
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


@pytest.fixture
def gatehouse(
    idp: ProviderProcess, tmp_path: Path, make_upstream: Callable[..., Upstream]
) -> Iterator[tuple[GatehouseProcess, Upstream]]:
    up = make_upstream("api")
    common = {"to": up.url, "pass_identity_headers": True, "policy": ALICE_ONLY}
    routes = [
        {"from": API, "bearer_token_format": "idp_identity_token", **common},
        {"from": AT, "bearer_token_format": "idp_access_token", **common},
        {"from": OPEN, **common},  # the global format: default
        {"from": PUBLIC, "to": up.url, "allow_public_unauthenticated_access": True},
        {
            "from": RELAY,
            "bearer_token_format": "idp_access_token",
            # The one explicit line that hands the upstream the caller's token.
            "set_request_headers": {"Authorization": "Bearer ${pomerium.access_token}"},
            **common,
        },
        {
            "from": SECOND,
            "bearer_token_format": "idp_identity_token",
            "idp_client_id": SECOND_ID,
            "idp_client_secret": SECOND_SECRET,
            **common,
        },
    ]
    gh = GatehouseProcess(sso_config(idp, routes), tmp_path)
    gh.start()
    yield gh, up
    assert gh.stop() == 0


def test_id_token_is_the_session_and_stays_behind(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    gh, up = gatehouse
    id_token = tokens(idp)["id_token"]
    for _ in range(3):  # a stream of API calls with one token
        status, body = curl(gh, API, "/v1/orders", id_token)
        assert status == 200, body
    seen = up.requests[-1]
    assert seen.target == "/v1/orders"
    # The upstream gets gatehouse's signed assertion for the token's user…
    claims = assertion_claims(gh, seen.header("x-pomerium-jwt-assertion") or "", "api.localhost")
    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["admins", "staff"]
    # …and not the IdP token: it was this request's credential.
    assert all(r.header("authorization") is None for r in up.requests)
    assert id_token not in up.raw_bytes.decode("latin-1")
    line = gh.wait_access(lambda e: e.get("host") == "api.localhost")
    assert line["user"] == "alice@example.com"


def test_bad_tokens_are_403_and_never_reach_the_upstream(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    gh, up = gatehouse
    id_token = tokens(idp)["id_token"]
    bad = [
        forged(id_token, email="bob@example.com"),
        forged(id_token, exp=1),
        "garbage",
        "",
        tokens(idp)["access_token"],  # an access token where an ID token is expected
    ]
    for token in bad:
        status, body = curl(gh, API, "/", token)
        assert status == 403, (token[:20], body)
        assert json.loads(body)["error"] == "Forbidden: invalid bearer token"
    assert up.requests == []
    refusals = [e for e in gh.logs() if e.get("message") == "bearer token refused"]
    assert len(refusals) == len(bad)
    assert "Traceback" not in gh.stderr_text()
    assert id_token.split(".")[2] not in gh.stderr_text()


def test_policy_still_decides(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    gh, up = gatehouse
    status, body = curl(gh, API, "/", tokens(idp, "bob")["id_token"])
    assert status == 403
    assert json.loads(body)["error"] == "Forbidden"  # denied by policy, token valid
    assert up.requests == []
    # Without a token the route is as before: an API client is told to sign in.
    assert curl(gh, API, "/", None)[0] == 401


def test_access_token_through_userinfo(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    gh, up = gatehouse
    answer = tokens(idp)
    status, body = curl(gh, AT, "/x", answer["access_token"])
    assert status == 200, body
    seen = up.requests[-1]
    claims = assertion_claims(gh, seen.header("x-pomerium-jwt-assertion") or "", "at.localhost")
    assert claims["email"] == "alice@example.com"
    assert seen.header("authorization") is None
    assert curl(gh, AT, "/x", answer["access_token"][:-2])[0] == 403
    # Bytes no token holds (sent as UTF-8): refused, never put into a userinfo request.
    assert curl(gh, AT, "/x", answer["access_token"] + "\u00e9")[0] == 403
    assert "Traceback" not in gh.stderr_text()


def test_token_forwarded_only_when_the_route_says_so(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    # An API that checks the access token itself: set_request_headers renders the token
    # the request was verified with (the session's), never one the client slipped in.
    gh, up = gatehouse
    access_token = tokens(idp)["access_token"]
    status, body = curl(gh, RELAY, "/orders", access_token)
    assert status == 200, body
    assert up.requests[-1].header("authorization") == f"Bearer {access_token}"
    # A bad token is refused before anything is rendered or forwarded.
    before = len(up.requests)
    assert curl(gh, RELAY, "/orders", access_token[:-2])[0] == 403
    assert len(up.requests) == before


def test_default_format_passes_the_header_through(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    # Pomerium's default: the bearer token is not interpreted and reaches the upstream;
    # with no cookie there is no session, so the policy asks for a sign-in.
    gh, up = gatehouse
    id_token = tokens(idp)["id_token"]
    assert curl(gh, OPEN, "/", id_token)[0] == 401
    assert up.requests == []
    assert curl(gh, PUBLIC, "/", id_token)[0] == 200
    assert up.requests[-1].header("authorization") == f"Bearer {id_token}"


def test_token_of_another_client_refused_on_a_per_route_client(
    idp: ProviderProcess, gatehouse: tuple[GatehouseProcess, Upstream]
) -> None:
    gh, up = gatehouse
    # Issued to gatehouse's global client: its aud is not the route's client.
    assert curl(gh, SECOND, "/", tokens(idp)["id_token"])[0] == 403
    assert up.requests == []


RESOURCE = "api://orders"
JWT_AT = "http://jwt.localhost"
OTHER_AUD = "http://other-aud.localhost"


@pytest.fixture(scope="module")
def resource_idp() -> Iterator[ProviderProcess]:
    """A provider issuing JWT access tokens for RESOURCE (RFC 9068), as Entra ID does."""
    with run_provider(
        REDIRECT_URIS=f"{AUTH_URL}/oauth2/callback",
        POST_LOGOUT_REDIRECT_URIS=f"{AUTH_URL}/.pomerium/signed_out",
        RESOURCE=RESOURCE,
    ) as p:
        yield p


def test_jwt_access_token_for_an_allowed_audience(
    resource_idp: ProviderProcess, tmp_path: Path, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream("api")
    common = {
        "to": up.url,
        "pass_identity_headers": True,
        "policy": ALICE_ONLY,
        "bearer_token_format": "idp_access_token",
    }
    routes = [
        {"from": JWT_AT, **common},  # the global audiences
        {"from": OTHER_AUD, "idp_access_token_allowed_audiences": ["api://billing"], **common},
    ]
    config = sso_config(resource_idp, routes, idp_access_token_allowed_audiences=[RESOURCE])
    gh = GatehouseProcess(config, tmp_path)
    gh.start()
    try:
        answer = tokens(resource_idp)
        access_token = answer["access_token"]
        assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
        status, body = curl(gh, JWT_AT, "/v1", access_token)
        assert status == 200, body
        seen = up.requests[-1]
        claims = assertion_claims(
            gh, seen.header("x-pomerium-jwt-assertion") or "", "jwt.localhost"
        )
        assert claims["email"] == "alice@example.com"
        assert seen.header("authorization") is None
        # The route's own list replaces the global one: api://orders is not allowed there.
        assert curl(gh, OTHER_AUD, "/v1", access_token)[0] == 403
        # Refused too: the ID token (aud is the client), a token with its audience
        # rewritten (signature), and one for the resource signed by someone else.
        assert curl(gh, JWT_AT, "/v1", answer["id_token"])[0] == 403
        assert curl(gh, JWT_AT, "/v1", forged(access_token, sub="bob"))[0] == 403
        other = jwt.encode(
            {**jwt.decode(access_token, options={"verify_signature": False})},
            secrets.token_bytes(32),
            algorithm="HS256",
            headers={"kid": jwt.get_unverified_header(access_token)["kid"]},
        )
        assert curl(gh, JWT_AT, "/v1", other)[0] == 403
        assert len(up.requests) == 1
    finally:
        assert gh.stop() == 0
