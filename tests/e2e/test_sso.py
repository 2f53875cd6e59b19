"""Single sign-on end to end: a real OpenID provider, a real gatehouse process, a real upstream.

The browser is :class:`support.browser.Browser` (HTTP level); the Chromium tests live in
``test_browser.py``. Assertions are verified with PyJWT against the JWKS gatehouse serves.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from support.browser import Browser
from support.upstream import Upstream

APP = "http://app.localhost"
OTHER = "http://other.localhost"


def routes(upstream: Upstream, **extra: object) -> list[dict[str, object]]:
    base = {
        "to": upstream.url,
        "pass_identity_headers": True,
        "policy": [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}],
        **extra,
    }
    return [
        {"from": APP, **base},
        {"from": OTHER, **base},
        {
            "from": "http://denied.localhost",
            "to": upstream.url,
            "policy": [{"allow": {"or": [{"email": {"is": "nobody@example.com"}}]}}],
        },
    ]


def test_sign_in_lands_on_the_requested_url_with_a_verifiable_assertion(
    start_sso, app_upstream
) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    final = browser.follow(f"{APP}/dashboard?tab=2")
    assert final.status_code == 200, final.text
    assert browser.last_url == f"{APP}/dashboard?tab=2"
    seen = app_upstream.requests[-1]
    assert seen.target == "/dashboard?tab=2"
    token = seen.header("x-pomerium-jwt-assertion")
    assert token
    jwks = jwt.PyJWKClient(
        f"http://127.0.0.1:{gh.port}/.well-known/pomerium/jwks.json",
        headers={"Host": "app.localhost"},
    )
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key.key, algorithms=["ES256"], audience="app.localhost", issuer="app.localhost"
    )
    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["admins", "staff"]
    assert claims["sub"] and claims["sub"] == claims["user"]


def test_set_request_headers_substitute_the_session_tokens_and_assertion(
    start_sso, app_upstream
) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(
        routes(
            app_upstream,
            pass_identity_headers=False,
            set_request_headers={
                "X-Jwt": "${pomerium.jwt}",
                "X-Id-Token": "$pomerium.id_token",
                "Authorization": "Bearer ${pomerium.access_token}",
            },
        )
    )
    browser = Browser(gh.port)
    assert browser.follow(f"{APP}/").status_code == 200
    seen = app_upstream.requests[-1]
    assert seen.header("x-pomerium-jwt-assertion") is None  # not passed on this route
    token = seen.header("x-jwt")
    assert token
    jwks = jwt.PyJWKClient(
        f"http://127.0.0.1:{gh.port}/.well-known/pomerium/jwks.json",
        headers={"Host": "app.localhost"},
    )
    claims = jwt.decode(
        token,
        jwks.get_signing_key_from_jwt(token).key,
        algorithms=["ES256"],
        audience="app.localhost",
        issuer="app.localhost",
    )
    assert claims["email"] == "alice@example.com"
    # The IdP's own ID token (signed by the IdP, for gatehouse's client) and access token.
    id_claims = jwt.decode(seen.header("x-id-token") or "", options={"verify_signature": False})
    assert id_claims["iss"].startswith("http://127.0.0.1") and id_claims["sub"] == claims["sub"]
    bearer = seen.header("authorization") or ""
    assert bearer.startswith("Bearer ") and len(bearer) > len("Bearer ") + 10


def test_second_route_host_needs_no_second_sign_in(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    assert browser.follow(f"{APP}/").status_code == 200
    idp_hops_before = sum(1 for h in browser.history if h.url.startswith("http://127.0.0.1"))
    final = browser.follow(f"{OTHER}/x")
    assert final.status_code == 200
    idp_hops_after = sum(1 for h in browser.history if h.url.startswith("http://127.0.0.1"))
    assert idp_hops_after == idp_hops_before  # the IdP was not visited again
    assert "other.localhost" in browser.cookies and "app.localhost" in browser.cookies
    assert (
        browser.cookies["other.localhost"]["_gatehouse"]
        != browser.cookies["app.localhost"]["_gatehouse"]
    )


def test_api_request_without_session_gets_401_json(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    r = httpx.get(
        f"http://127.0.0.1:{gh.port}/api",
        headers={"Host": "app.localhost", "Accept": "application/json"},
    )
    assert r.status_code == 401
    assert r.json()["status"] == 401
    assert app_upstream.requests == []


def test_policy_deny_is_403_after_sign_in(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    final = browser.follow("http://denied.localhost/")
    assert final.status_code == 403
    assert app_upstream.requests == []


def test_cookie_from_one_host_does_not_work_on_another(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    browser.follow(f"{APP}/")
    stolen = browser.cookies["app.localhost"]["_gatehouse"]
    r = httpx.get(
        f"http://127.0.0.1:{gh.port}/",
        headers={
            "Host": "other.localhost",
            "Cookie": f"_gatehouse={stolen}",
            "Accept": "application/json",
        },
    )
    assert r.status_code == 401


def test_user_page_and_sign_out_end_the_session_everywhere(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    browser.follow(f"{APP}/")
    browser.follow(f"{OTHER}/")
    page = browser.get(f"{APP}/.pomerium/")
    assert page.status_code == 200 and "alice@example.com" in page.text
    user = browser.get(f"{APP}/.pomerium/user", headers={"Accept": "application/json"})
    assert user.json()["email"] == "alice@example.com"
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    other_cookie = browser.cookies["other.localhost"]["_gatehouse"]
    # A sign-out without the form's CSRF token is refused.
    assert (
        browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": "x"}).status_code == 400
    )
    out = browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
    assert out.status_code == 303
    assert "_gatehouse" not in browser.cookies.get("app.localhost", {})
    end = out.headers["location"]
    assert end.startswith("http://127.0.0.1") and "id_token_hint" in end
    # The other host's cookie is dead too: the session was deleted in the store.
    r = httpx.get(
        f"http://127.0.0.1:{gh.port}/",
        headers={
            "Host": "other.localhost",
            "Cookie": f"_gatehouse={other_cookie}",
            "Accept": "application/json",
        },
    )
    assert r.status_code == 401
    # And the next visit asks to sign in again.
    again = browser.get(f"{APP}/")
    assert again.status_code == 302 and "/.pomerium/sign_in" in again.headers["location"]


def test_unsigned_or_tampered_sign_in_urls_are_refused(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    first = browser.get(f"{APP}/")
    sign_in = first.headers["location"]
    tampered = sign_in.replace("app.localhost", "evil.example.com")
    assert browser.get(tampered).status_code == 400
    unsigned = "http://authenticate.localhost/.pomerium/sign_in?pomerium_redirect_uri=http%3A%2F%2Fapp.localhost%2F"
    assert browser.get(unsigned).status_code == 400


def test_handoff_token_is_single_use(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    captured: list[str] = []
    browser.follow(f"{APP}/", stop=lambda u: "/.pomerium/callback/" in u and not captured.append(u))
    handoff = captured[0]
    assert browser.get(handoff).status_code == 302
    # Replayed in the browser that started the sign-in (it has the binding cookie).
    assert browser.get(handoff).status_code == 400


def test_programmatic_login(start_sso, app_upstream) -> None:  # type: ignore[no-untyped-def]
    gh = start_sso(routes(app_upstream))
    browser = Browser(gh.port)
    r = browser.get(f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:9999/cb")
    assert r.status_code == 200
    login_url = r.text
    final = browser.follow(login_url, stop=lambda u: u.startswith("http://127.0.0.1:9999/"))
    loopback = final.headers["location"]
    token = parse_qs(urlsplit(loopback).query)["pomerium_jwt"][0]
    api = httpx.get(
        f"http://127.0.0.1:{gh.port}/data",
        headers={"Host": "app.localhost", "Authorization": f"Pomerium {token}"},
    )
    assert api.status_code == 200
    assert app_upstream.requests[-1].header("x-pomerium-jwt-assertion")
    bad = browser.get(
        f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=https://evil.example.com/cb"
    )
    assert bad.status_code == 400
