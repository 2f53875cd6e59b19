"""Protocol messages without a network: URLs, client authentication, token responses,
discovery parsing and provider quirks."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from types import MappingProxyType
from urllib.parse import parse_qs, urlsplit

import pytest

from gatehouse.authenticate import oidc
from gatehouse.authenticate.discovery import ProviderMetadata, parse_jwks, parse_metadata
from gatehouse.authenticate.errors import (
    AuthorizationDenied,
    IdpUnavailable,
    InvalidState,
    TokenRequestRejected,
)
from gatehouse.authenticate.providers import issuer_matches, quirks_for
from gatehouse.config import load_text

META = ProviderMetadata(
    issuer="https://idp.example.com",
    authorization_endpoint="https://idp.example.com/auth?tenant=1",
    token_endpoint="https://idp.example.com/token",
    jwks_uri="https://idp.example.com/jwks",
    revocation_endpoint="https://idp.example.com/revoke",
    end_session_endpoint="https://idp.example.com/logout",
    token_endpoint_auth_methods_supported=("client_secret_post", "client_secret_basic"),
)
CFG = oidc.ClientConfig(
    client_id="gate house",
    client_secret="s3cr:t+",
    redirect_uri="https://auth.example.com/oauth2/callback",
    request_params=MappingProxyType({"prompt": "consent", "state": "evil", "hd": "example.com"}),
)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_authorization_url() -> None:
    url = oidc.authorization_url(META, CFG, state="st", nonce="no", code_challenge="ch")
    q = query(url)
    assert url.startswith("https://idp.example.com/auth?tenant=1&")
    assert q["state"] == "st"  # idp_request_params cannot override the flow's own
    assert q["prompt"] == "consent" and q["hd"] == "example.com"
    assert q["scope"] == "openid profile email offline_access"
    assert q["code_challenge"] == "ch" and q["code_challenge_method"] == "S256"


def test_pkce_s256_required_when_announced() -> None:
    meta = replace(META, code_challenge_methods_supported=("plain",))
    with pytest.raises(IdpUnavailable):
        oidc.authorization_url(meta, CFG, state="s", nonce="n", code_challenge="c")


def test_pkce_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oidc.pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_client_secret_basic_preferred_and_form_encoded() -> None:
    req = oidc.code_request(META, CFG, code="c", code_verifier="v")
    auth = dict(req.headers)["Authorization"]
    assert base64.b64decode(auth[6:]).decode() == "gate+house:s3cr%3At%2B"  # RFC 6749 §2.3.1
    assert ("client_secret", "s3cr:t+") not in req.form
    assert dict(req.form) == {
        "grant_type": "authorization_code",
        "code": "c",
        "redirect_uri": CFG.redirect_uri,
        "code_verifier": "v",
    }


def test_client_secret_post_when_only_allowed() -> None:
    meta = replace(META, token_endpoint_auth_methods_supported=("client_secret_post",))
    req = oidc.refresh_request(meta, CFG, "rt")
    assert "Authorization" not in dict(req.headers)
    assert dict(req.form)["client_secret"] == "s3cr:t+"


def test_no_supported_auth_method() -> None:
    meta = replace(META, token_endpoint_auth_methods_supported=("private_key_jwt",))
    with pytest.raises(IdpUnavailable):
        oidc.code_request(meta, CFG, code="c", code_verifier="v")


def test_revocation_and_end_session() -> None:
    req = oidc.revocation_request(META, CFG, "rt", "refresh_token")
    assert req is not None and dict(req.form) == {"token": "rt", "token_type_hint": "refresh_token"}
    url = oidc.end_session_url(
        META, CFG, id_token_hint="idt", post_logout_redirect_uri="https://a/"
    )
    assert url is not None
    assert query(url) == {
        "client_id": "gate house",
        "post_logout_redirect_uri": "https://a/",
        "id_token_hint": "idt",
    }
    bare = replace(META, end_session_endpoint=None, revocation_endpoint=None)
    assert oidc.revocation_request(bare, CFG, "rt", "refresh_token") is None
    assert oidc.end_session_url(bare, CFG, id_token_hint="", post_logout_redirect_uri="x") is None


def test_auth0_fallback_logout() -> None:
    meta = replace(META, issuer="https://t.auth0.com/", end_session_endpoint=None)
    cfg = oidc.ClientConfig("id", "s", "https://a.example.com/cb", quirks=quirks_for("auth0"))
    url = oidc.end_session_url(meta, cfg, id_token_hint="x", post_logout_redirect_uri="https://r/")
    assert url == "https://t.auth0.com/v2/logout?client_id=id&returnTo=https%3A%2F%2Fr%2F"


def test_parse_callback() -> None:
    assert oidc.parse_callback({"code": "c", "state": "s"}, META) == ("c", "s")
    with pytest.raises(InvalidState):
        oidc.parse_callback({"code": "c"}, META)
    with pytest.raises(InvalidState):
        oidc.parse_callback({"code": "c", "state": "s", "iss": "https://evil"}, META)
    with pytest.raises(AuthorizationDenied):
        oidc.parse_callback({"state": "s", "error": "access_denied"}, META)
    with pytest.raises(InvalidState):
        oidc.parse_callback({"state": "s"}, META)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant"}, TokenRequestRejected),
        (401, {"error": "invalid_client"}, TokenRequestRejected),
        (400, "not json", TokenRequestRejected),
        (500, {"error": "server_error"}, IdpUnavailable),
        (502, "", IdpUnavailable),
        (200, "not json", IdpUnavailable),
        (200, {"token_type": "Bearer"}, IdpUnavailable),
        (200, {"access_token": "a", "token_type": "mac"}, IdpUnavailable),
        (200, ["a"], IdpUnavailable),
    ],
)
def test_token_response_errors(status: int, body: object, error: type[Exception]) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    with pytest.raises(error):
        oidc.parse_token_response(status, content)


def test_token_response() -> None:
    body = {"access_token": "a", "token_type": "bearer", "id_token": "i", "expires_in": 60}
    tokens = oidc.parse_token_response(200, json.dumps(body).encode())
    assert (tokens.access_token, tokens.id_token, tokens.expires_in, tokens.refresh_token) == (
        "a",
        "i",
        60.0,
        "",
    )


DOC = {
    "issuer": "https://idp.example.com",
    "authorization_endpoint": "https://idp.example.com/auth",
    "token_endpoint": "https://idp.example.com/token",
    "jwks_uri": "https://idp.example.com/jwks",
}


def test_parse_metadata() -> None:
    meta = parse_metadata(DOC, "https://idp.example.com/", quirks_for("oidc"))
    assert meta.id_token_signing_alg_values_supported == ("RS256",)
    assert meta.token_endpoint_auth_methods_supported == ("client_secret_basic",)


@pytest.mark.parametrize(
    "doc",
    [
        {**DOC, "issuer": "https://evil.example.com"},
        {**DOC, "issuer": "https://idp.example.com/other"},
        {k: v for k, v in DOC.items() if k != "token_endpoint"},
        {**DOC, "jwks_uri": "javascript:alert(1)"},
        {**DOC, "id_token_signing_alg_values_supported": "RS256"},
        ["not", "an", "object"],
    ],
)
def test_bad_metadata(doc: object) -> None:
    with pytest.raises(IdpUnavailable):
        parse_metadata(doc, "https://idp.example.com", quirks_for("oidc"))


def test_azure_tenant_template_issuer() -> None:
    doc = {**DOC, "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"}
    url = "https://login.microsoftonline.com/common/v2.0"
    assert parse_metadata(doc, url, quirks_for("azure")).issuer == doc["issuer"]
    with pytest.raises(IdpUnavailable):
        parse_metadata(doc, url, quirks_for("oidc"))


def test_parse_jwks_skips_unusable_keys() -> None:
    keys = parse_jwks(
        {
            "keys": [
                {"kty": "oct", "k": "c2VjcmV0"},  # symmetric: never from a JWKS
                {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
                {"kty": "weird"},
                {"kty": "EC", "crv": "P-256", "x": "bad"},
            ]
        }
    )
    assert keys == ()
    with pytest.raises(IdpUnavailable):
        parse_jwks({"nokeys": []})


def test_issuer_matches() -> None:
    assert issuer_matches("https://t.auth0.com", "https://t.auth0.com/")
    assert not issuer_matches("https://t.auth0.com", "https://t.auth0.com.evil/")
    assert not issuer_matches("https://a", "")


def test_quirks() -> None:
    azure = quirks_for("azure")
    assert azure.subject({"sub": "pairwise", "oid": "stable"}) == "stable"
    assert azure.email({"preferred_username": "a@b.c"}) == "a@b.c"
    auth0 = quirks_for("auth0")
    assert auth0.groups({"https://example.com/groups": ["a", "b"], "groups": ["a"]}) == ("a", "b")
    assert quirks_for("oidc").groups({"https://example.com/groups": ["a"]}) == ()
    assert quirks_for("keycloak").groups({"groups": "/team"}) == ("/team",)
    assert quirks_for(None).name == "oidc"
    with pytest.raises(ValueError):
        quirks_for("builtin")


def test_client_config_from_options() -> None:
    options = load_text(
        "insecure_server: true\n"
        "idp_provider: google\n"
        "idp_client_id: cid\n"
        "idp_client_secret: sec\n"
        "idp_request_params: {hd: example.com}\n",
        env={},
    ).options
    cfg = oidc.ClientConfig.from_options(options, "https://auth.example.com/oauth2/callback")
    assert cfg.scopes == ("openid", "profile", "email")  # Google refuses offline_access
    url = oidc.authorization_url(META, cfg, state="s", nonce="n", code_challenge="c")
    assert query(url)["access_type"] == "offline" and query(url)["hd"] == "example.com"
