"""The built-in IdP as the provider of relying parties we did not write.

authlib's OAuth 2.0 / OIDC client drives code + PKCE, refresh and revocation; PyJWT (with
keys fetched by its own JWKS client) validates the ID token. The IdP runs behind
gatehouse's real HTTP server.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import jwt
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from .conftest import (
    ALICE_PW,
    CLIENT_ID,
    CLIENT_SECRET,
    LOGOUT_DONE,
    OTHER_ID,
    OTHER_SECRET,
    REDIRECT,
    RP,
    IdpServer,
)
from .helpers import form_fields, query_of, submit_sign_in


def _discover(idp: IdpServer) -> dict[str, str]:
    resp = requests.get(idp.issuer + "/.well-known/openid-configuration", timeout=5)
    assert resp.status_code == 200
    meta = resp.json()
    assert meta["issuer"] == idp.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    return meta


def _validate_id_token(meta: dict[str, str], token: str, audience: str) -> dict[str, object]:
    key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=meta["issuer"],
        options={"require": ["iss", "sub", "aud", "exp", "iat", "auth_time"]},
    )


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_authlib_code_flow_refresh_userinfo_sso_and_logout(
    make_idp: Callable[..., IdpServer],
) -> None:
    idp = make_idp(sqlite=True)
    meta = _discover(idp)
    origin = f"http://127.0.0.1:{idp.port}"
    browser = requests.Session()

    # --- first relying party: client_secret_basic -------------------------------------
    rp = OAuth2Session(
        CLIENT_ID,
        CLIENT_SECRET,
        scope="openid email profile groups offline_access",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier, nonce = generate_token(48), generate_token(20)
    uri, state = rp.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    page = browser.get(uri, timeout=5)
    assert page.status_code == 200 and "Sign in" in page.text
    signed_in = submit_sign_in(browser, origin, page.text, "alice", ALICE_PW)
    assert signed_in.status_code == 303
    location = signed_in.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    assert query_of(location)["iss"] == idp.issuer

    token = rp.fetch_token(
        meta["token_endpoint"], authorization_response=location, state=state, code_verifier=verifier
    )
    claims = _validate_id_token(meta, token["id_token"], CLIENT_ID)
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Alice Liddell"
    assert claims["groups"] == ["admins", "staff"]
    assert claims["nonce"] == nonce
    assert claims["azp"] == CLIENT_ID
    assert claims["at_hash"] == _at_hash(token["access_token"])
    assert token["token_type"].lower() == "bearer" and "refresh_token" in token

    info = rp.get(meta["userinfo_endpoint"], timeout=5)
    assert info.status_code == 200
    assert info.json()["email"] == "alice@example.com"

    # --- refresh with rotation --------------------------------------------------------
    old_refresh = token["refresh_token"]
    fresh = rp.refresh_token(meta["token_endpoint"], refresh_token=old_refresh)
    assert fresh["refresh_token"] != old_refresh
    refreshed = _validate_id_token(meta, fresh["id_token"], CLIENT_ID)
    assert refreshed["sub"] == "alice" and "nonce" not in refreshed
    assert refreshed["auth_time"] == claims["auth_time"]
    # The spent token is refused...
    again = requests.post(
        meta["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": old_refresh,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # ...and its reuse revoked the whole family (BCP §4.14.2).
    revoked = requests.post(
        meta["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": fresh["refresh_token"],
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )
    assert revoked.json()["error"] == "invalid_grant"
    gone = requests.get(
        meta["userinfo_endpoint"],
        timeout=5,
        headers={"Authorization": "Bearer " + fresh["access_token"]},
    )
    assert gone.status_code == 401

    # --- a second relying party: single sign-on, client_secret_post ------------------
    rp2 = OAuth2Session(
        OTHER_ID,
        OTHER_SECRET,
        scope="openid email",
        redirect_uri=RP + "/login/generic_oauth",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
    )
    verifier2 = generate_token(48)
    uri2, state2 = rp2.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier2, nonce="n2"
    )
    sso = browser.get(uri2, allow_redirects=False, timeout=5)
    assert sso.status_code == 302, "the IdP session should skip the sign-in page"
    token2 = rp2.fetch_token(
        meta["token_endpoint"],
        authorization_response=sso.headers["Location"],
        state=state2,
        code_verifier=verifier2,
    )
    claims2 = _validate_id_token(meta, token2["id_token"], OTHER_ID)
    assert claims2["sub"] == "alice" and claims2["auth_time"] == claims["auth_time"]
    assert "refresh_token" not in token2  # no offline_access asked

    # --- revocation (RFC 7009) through authlib -----------------------------------------
    rv = rp2.revoke_token(
        meta["revocation_endpoint"], token=token2["access_token"], token_type_hint="access_token"
    )
    assert rv.status_code == 200
    assert rp2.get(meta["userinfo_endpoint"], timeout=5).status_code == 401

    # --- end session ------------------------------------------------------------------
    out = browser.get(
        meta["end_session_endpoint"],
        params={
            "id_token_hint": token["id_token"],
            "post_logout_redirect_uri": LOGOUT_DONE,
            "state": "bye",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert out.status_code == 302
    assert out.headers["Location"] == LOGOUT_DONE + "?state=bye"
    assert "Max-Age=0" in out.headers["Set-Cookie"]
    # Signed out: the next authorization asks for the password again.
    uri3, _ = rp2.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=generate_token(48), nonce="n3"
    )
    after = browser.get(uri3, allow_redirects=False, timeout=5)
    assert after.status_code == 200
    assert form_fields(after.text)[0].endswith("/sign_in")


def test_public_client_with_pkce_only(idp: IdpServer) -> None:
    meta = _discover(idp)
    browser = requests.Session()
    rp = OAuth2Session(
        "public-app",
        None,
        scope="openid",
        redirect_uri=RP + "/public/cb",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    uri, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    page = browser.get(uri, timeout=5)
    resp = submit_sign_in(browser, f"http://127.0.0.1:{idp.port}", page.text, "alice", ALICE_PW)
    token = rp.fetch_token(
        meta["token_endpoint"],
        authorization_response=resp.headers["Location"],
        state=state,
        code_verifier=verifier,
    )
    assert _validate_id_token(meta, token["id_token"], "public-app")["sub"] == "alice"
