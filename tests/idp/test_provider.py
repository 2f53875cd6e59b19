"""The IdP's refusals over real HTTP: each bad request is rejected and grants nothing."""

from __future__ import annotations

from collections.abc import Callable

import requests

from gatehouse.idp import ThrottlePolicy

from .conftest import ALICE_PW, CLIENT_ID, CLIENT_SECRET, REDIRECT, IdpServer
from .helpers import authorize_url, pkce, query_of, submit_sign_in


def _origin(idp: IdpServer) -> str:
    return f"http://127.0.0.1:{idp.port}"


def _code(idp: IdpServer, browser: requests.Session, challenge: str) -> str:
    page = browser.get(authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), timeout=5)
    resp = submit_sign_in(browser, _origin(idp), page.text, "alice", ALICE_PW)
    assert resp.status_code == 303
    q = query_of(resp.headers["Location"])
    assert q["state"] == "st-1"
    return q["code"]


def _redeem(
    idp: IdpServer, code: str, verifier: str, redirect_uri: str = REDIRECT
) -> requests.Response:
    return requests.post(
        idp.url("/token"),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
    )


def test_wrong_pkce_verifier_is_rejected_and_burns_the_code(idp: IdpServer) -> None:
    verifier, challenge = pkce()
    code = _code(idp, requests.Session(), challenge)
    wrong = _redeem(idp, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert _redeem(idp, code, verifier).json()["error"] == "invalid_grant"


def test_code_is_single_use_and_reuse_revokes_its_tokens(idp: IdpServer) -> None:
    verifier, challenge = pkce()
    code = _code(idp, requests.Session(), challenge)
    first = _redeem(idp, code, verifier)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "no-store"
    access = first.json()["access_token"]
    bearer = {"Authorization": "Bearer " + access}
    assert requests.get(idp.url("/userinfo"), headers=bearer, timeout=5).status_code == 200
    second = _redeem(idp, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert requests.get(idp.url("/userinfo"), headers=bearer, timeout=5).status_code == 401


def test_token_redirect_uri_must_match(idp: IdpServer) -> None:
    verifier, challenge = pkce()
    code = _code(idp, requests.Session(), challenge)
    resp = _redeem(idp, code, verifier, redirect_uri=REDIRECT + "x")
    assert resp.json()["error"] == "invalid_grant"


def test_unregistered_redirect_uri_shows_an_error_page(idp: IdpServer) -> None:
    _, challenge = pkce()
    for bad in ("https://evil.example/cb", REDIRECT + "/", REDIRECT + "?x=1", ""):
        resp = requests.get(
            authorize_url(idp.issuer, CLIENT_ID, bad, challenge), allow_redirects=False, timeout=5
        )
        assert resp.status_code == 400
        assert "Location" not in resp.headers
        assert "Invalid redirect address" in resp.text
    unknown = requests.get(
        authorize_url(idp.issuer, "nobody", REDIRECT, challenge), allow_redirects=False, timeout=5
    )
    assert unknown.status_code == 400 and "Location" not in unknown.headers


def test_pkce_is_required(idp: IdpServer) -> None:
    for extra in ({"code_challenge": ""}, {"code_challenge_method": "plain"}):
        resp = requests.get(
            authorize_url(idp.issuer, CLIENT_ID, REDIRECT, "x" * 43, **extra),
            allow_redirects=False,
            timeout=5,
        )
        assert resp.status_code == 302
        q = query_of(resp.headers["Location"])
        assert q["error"] == "invalid_request" and q["state"] == "st-1"
    no_openid = requests.get(
        authorize_url(idp.issuer, CLIENT_ID, REDIRECT, "x" * 43, scope="email"),
        allow_redirects=False,
        timeout=5,
    )
    assert query_of(no_openid.headers["Location"])["error"] == "invalid_scope"


def test_wrong_password_shows_an_error_and_grants_nothing(idp: IdpServer) -> None:
    browser = requests.Session()
    _, challenge = pkce()
    page = browser.get(authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), timeout=5)
    for user, pw in (("alice", "wrong"), ("nobody", ALICE_PW), ("", "")):
        resp = submit_sign_in(browser, _origin(idp), page.text, user, pw)
        assert resp.status_code == 200
        assert "Invalid username or password." in resp.text
        assert "Location" not in resp.headers
        assert "_gatehouse_idp=" not in resp.headers.get("Set-Cookie", "")
    assert "_gatehouse_idp" not in browser.cookies.keys()
    # prompt=none confirms there is no session.
    probe = requests.get(
        authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge, prompt="none"),
        cookies=browser.cookies,
        allow_redirects=False,
        timeout=5,
    )
    assert query_of(probe.headers["Location"])["error"] == "login_required"


def test_sign_in_form_needs_its_csrf_cookie(idp: IdpServer) -> None:
    browser = requests.Session()
    _, challenge = pkce()
    page = browser.get(authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), timeout=5)
    browser.cookies.clear()  # a cross-site post would not carry (or know) the cookie
    resp = submit_sign_in(browser, _origin(idp), page.text, "alice", ALICE_PW)
    assert resp.status_code == 403 and "Location" not in resp.headers


def test_throttling_per_username(make_idp: Callable[..., IdpServer]) -> None:
    idp = make_idp(
        throttle=ThrottlePolicy(user_free_failures=2, address_free_failures=100, base_delay_s=30.0)
    )
    browser = requests.Session()
    _, challenge = pkce()
    page = browser.get(authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), timeout=5)
    for _ in range(2):
        assert "Too many" not in submit_sign_in(browser, _origin(idp), page.text, "alice", "x").text
    third = submit_sign_in(browser, _origin(idp), page.text, "alice", "x")
    assert "Too many attempts, try again in 30 s." in third.text
    # Even the right password is refused while locked, and nothing is granted.
    locked = submit_sign_in(browser, _origin(idp), page.text, "ALICE", ALICE_PW)
    assert locked.status_code == 429 and locked.headers["Retry-After"] in ("29", "30")
    assert "Too many attempts, try again in" in locked.text and "Location" not in locked.headers
    # Another user from the same address is not affected by alice's counter.
    ok = submit_sign_in(browser, _origin(idp), page.text, "bob", "hunter2-but-longer")
    assert ok.status_code == 303


def test_throttling_per_address(make_idp: Callable[..., IdpServer]) -> None:
    idp = make_idp(
        throttle=ThrottlePolicy(user_free_failures=100, address_free_failures=3, base_delay_s=10.0)
    )
    browser = requests.Session()
    _, challenge = pkce()
    page = browser.get(authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), timeout=5)
    for name in ("u1", "u2", "u3"):
        submit_sign_in(browser, _origin(idp), page.text, name, "x")
    resp = submit_sign_in(browser, _origin(idp), page.text, "u4", "x")
    assert "Too many attempts, try again in 10 s." in resp.text
    assert submit_sign_in(browser, _origin(idp), page.text, "alice", ALICE_PW).status_code == 429


def test_userinfo_rejects_bad_tokens(idp: IdpServer) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer " + "a" * 5000},
    ):
        resp = requests.get(idp.url("/userinfo"), headers=headers, timeout=5)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_endpoint_client_authentication(idp: IdpServer) -> None:
    base = {
        "grant_type": "authorization_code",
        "code": "x",
        "code_verifier": "y" * 43,
        "redirect_uri": REDIRECT,
    }
    bad = requests.post(
        idp.url("/token"), data=base, auth=(CLIENT_ID, "wrong-wrong-wrong"), timeout=5
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert bad.headers["WWW-Authenticate"].startswith("Basic")
    post = requests.post(
        idp.url("/token"), timeout=5, data={**base, "client_id": CLIENT_ID, "client_secret": "nope"}
    )
    assert post.status_code == 401
    both = requests.post(
        idp.url("/token"),
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=5,
        data={**base, "client_secret": CLIENT_SECRET},
    )
    assert both.status_code == 401
    good = requests.post(idp.url("/token"), auth=(CLIENT_ID, CLIENT_SECRET), data=base, timeout=5)
    assert good.status_code == 400 and good.json()["error"] == "invalid_grant"


def test_end_session_checks_the_redirect_and_asks_without_a_hint(idp: IdpServer) -> None:
    browser = requests.Session()
    _, challenge = pkce()
    _code(idp, browser, challenge)
    bad = browser.get(
        idp.url("/end_session"),
        params={"client_id": CLIENT_ID, "post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
        timeout=5,
    )
    assert bad.status_code == 400 and "Location" not in bad.headers
    forged = browser.get(
        idp.url("/end_session"), params={"id_token_hint": "a.b.c"}, allow_redirects=False, timeout=5
    )
    assert forged.status_code == 400
    ask = browser.get(idp.url("/end_session"), allow_redirects=False, timeout=5)
    assert ask.status_code == 200 and "Sign out?" in ask.text
    # Still signed in: nothing was ended by the GET.
    again = browser.get(
        authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), allow_redirects=False, timeout=5
    )
    assert again.status_code == 302
    confirmed = submit_sign_in(browser, _origin(idp), ask.text, "", "")  # posts the form
    assert confirmed.status_code == 200 and "Signed out" in confirmed.text
    after = browser.get(
        authorize_url(idp.issuer, CLIENT_ID, REDIRECT, challenge), allow_redirects=False, timeout=5
    )
    assert after.status_code == 200  # the sign-in page again


def test_idp_answers_only_on_its_own_host(idp: IdpServer) -> None:
    resp = requests.get(
        idp.url("/.well-known/openid-configuration"), headers={"Host": "other.example"}, timeout=5
    )
    assert resp.status_code == 404
