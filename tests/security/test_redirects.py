"""Open redirects and signed-URL tampering on sign-in, the hand-off, sign-out and the CLI login.

Signed URLs carry ``pomerium_redirect_uri`` between gatehouse's hosts. An attacker wants
gatehouse to send a signed-in user (and whatever rides in the URL) to a host they own.
Two layers are attacked separately: the signature (tampered, expired, moved to another
endpoint or host) and the allow list (a *validly signed* URL naming a hostile target:
we hold the shared secret here, as an insider or a leaked link would). Every refusal
must be a 400 without a ``Location``.
"""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from gatehouse.authenticate.redirects import RedirectSigner
from support.browser import Browser

from .conftest import AUTH, Stack, cookie_of

EVIL_TARGETS = [
    "https://evil.example/",
    "http://evil.example/",
    "//evil.example/",
    "\\\\evil.example/",
    "/\\evil.example/",
    "http://app.localhost@evil.example/",
    "http://app.localhost:80@evil.example/",
    "http://evil.example\\@app.localhost/",
    "http://evil.example#@app.localhost/",
    "http://evil.example?@app.localhost/",
    "http://app.localhost.evil.example/",
    "http://evil.example%2f@app.localhost/",
    "http://app.localhost%00.evil.example/",
    "http:evil.example",
    "http:/\\evil.example",
    "HTTP://evil.example/",
    " http://evil.example/",
    "http://evil.example\t/",
    "javascript:alert(1)//app.localhost/",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://app.localhost/",
    "http://\uff41pp.localhost/",
    "http://app.localhost:99999/",
]


def _signer(stack: Stack, offset_s: float = 0.0) -> RedirectSigner:
    return RedirectSigner(
        base64.b64decode(stack.shared_secret), clock=lambda: time.time() + offset_s
    )


def _get(stack: Stack, url: str, cookies: dict[str, str] | None = None) -> httpx.Response:
    parts = urlsplit(url)
    headers = {"Host": parts.netloc, "Accept": "text/html"}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    target = urlunsplit(("http", f"127.0.0.1:{stack.port}", parts.path, parts.query, ""))
    return httpx.get(target, headers=headers, timeout=5)


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.headers)
    assert "location" not in response.headers
    assert not any("_gatehouse=" in c for c in response.headers.get_list("set-cookie"))


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    pairs.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(pairs, quote_via=quote)))


def _real_sign_in_url(stack: Stack) -> str:
    response = _get(stack, "http://app.localhost/dash")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{AUTH}/.pomerium/sign_in?")
    return location


def _resigned(stack: Stack, target: str, offset_s: float = 0.0) -> tuple[Browser, str]:
    """A browser that was sent to sign in, and gatehouse's sign-in URL for it with the
    target replaced and re-signed with the real key (every other parameter kept, so only
    the allow list, or the lifetime, is under test)."""
    browser = Browser(stack.port)
    response = browser.get("http://app.localhost/dash")
    assert response.status_code == 302
    location = response.headers["location"]
    return browser, _signer(stack, offset_s).sign(
        _with_param(location, "pomerium_redirect_uri", target)
    )


@pytest.mark.parametrize("target", EVIL_TARGETS)
def test_validly_signed_sign_in_never_redirects_off_site(fresh: Stack, target: str) -> None:
    browser, url = _resigned(fresh, target)
    _refused(browser.get(url))


def test_control_validly_signed_sign_in_to_a_route_host_proceeds(fresh: Stack) -> None:
    browser, url = _resigned(fresh, "http://other.localhost/x")
    response = browser.get(url)
    assert response.status_code == 302
    assert response.headers["location"].startswith(fresh.idp.issuer + "/authorize?")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda u: _with_param(u, "pomerium_redirect_uri", "https://evil.example/"),
        lambda u: _with_param(u, "pomerium_redirect_uri", "http://other.localhost/"),
        lambda u: _with_param(u, "pomerium_expiry", str(int(time.time()) + 10**6)),
        lambda u: _with_param(u, "pomerium_issued", str(int(time.time()) - 10)),
        lambda u: _with_param(u, "pomerium_signature", "A" * 43),
        lambda u: _with_param(u, "pomerium_signature", ""),
        lambda u: u + "&pomerium_signature=" + "A" * 43,
        lambda u: u + "&extra=1",
        lambda u: u.split("&pomerium_signature=")[0],
        lambda u: u.replace("/.pomerium/sign_in", "/.pomerium/sign_in/"),
    ],
    ids=[
        "target-evil",
        "target-other-route",
        "expiry-extended",
        "issued-changed",
        "signature-forged",
        "signature-empty",
        "signature-duplicated",
        "param-added",
        "signature-dropped",
        "path-changed",
    ],
)
def test_tampered_sign_in_url_is_refused(fresh: Stack, tamper) -> None:  # type: ignore[no-untyped-def]
    url = tamper(_real_sign_in_url(fresh))
    response = _get(fresh, url)
    if response.status_code == 404:  # the changed path is simply not an endpoint
        return
    _refused(response)


@pytest.mark.parametrize(
    "offset_s", [-(300 + 31 + 60), 3600], ids=["expired", "issued-in-the-future"]
)
def test_signed_url_outside_its_lifetime_is_refused(fresh: Stack, offset_s: float) -> None:
    browser, url = _resigned(fresh, "http://app.localhost/", offset_s)
    _refused(browser.get(url))


def test_signature_is_bound_to_host_and_endpoint(fresh: Stack) -> None:
    """A URL signed for a route host's sign-out is no good as a sign-in, or on another host."""
    signer = _signer(fresh)
    for url in (
        signer.sign_in_url("http://app.localhost", "http://app.localhost/"),
        signer.sign_in_url(AUTH, "http://app.localhost/", path="/.pomerium/sign_out"),
    ):
        moved = url.replace("http://app.localhost/.pomerium/sign_in", f"{AUTH}/.pomerium/sign_in")
        moved = moved.replace(f"{AUTH}/.pomerium/sign_out", f"{AUTH}/.pomerium/sign_in")
        _refused(_get(fresh, moved))


def test_unsigned_sign_in_is_refused(fresh: Stack) -> None:
    target = quote("https://evil.example/", safe="")
    _refused(_get(fresh, f"{AUTH}/.pomerium/sign_in?pomerium_redirect_uri={target}"))


# -- the hand-off on the route host -----------------------------------------------------------


def _handoff_url(stack: Stack) -> tuple[Browser, str]:
    browser = Browser(stack.port)
    browser.follow(
        "http://app.localhost/start", stop=lambda u: "/.pomerium/callback/" in urlsplit(u).path
    )
    url = browser.history[-1].response.headers["location"]
    assert "/.pomerium/callback/?" in url, url
    return browser, url


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "\\\\evil.example",
        "http://app.localhost@evil.example/",
        "javascript:alert(1)",
        "http://other.localhost/",
    ],
)
def test_hand_off_redirect_stays_on_the_route_host(fresh: Stack, target: str) -> None:
    browser, url = _handoff_url(fresh)
    response = browser.get(_with_param(url, "pomerium_redirect_uri", target))
    assert response.status_code == 302
    location = response.headers["location"]
    assert location == "/" or urlsplit(location).hostname == "app.localhost", location


def test_hand_off_is_single_use_and_bound_to_its_host(fresh: Stack) -> None:
    browser, url = _handoff_url(fresh)
    other = url.replace("http://app.localhost/", "http://other.localhost/")
    _refused(browser.get(other))
    assert browser.get(url).status_code == 302  # the right host redeems it once
    _refused(Browser(fresh.port).get(url))  # a replay, from anyone, fails


def test_forged_oauth_state_is_refused(fresh: Stack) -> None:
    _refused(_get(fresh, f"{AUTH}/oauth2/callback?code=x&state=g1.AAAA&iss={fresh.idp.issuer}"))
    assert fresh.idp.token_requests == []  # never reached the token endpoint


# -- sign-out and the CLI login ---------------------------------------------------------------


def test_unsigned_sign_out_get_is_refused_and_keeps_the_session(
    fresh: Stack, alice: Browser
) -> None:
    target = quote("https://evil.example/", safe="")
    _refused(alice.get(f"http://app.localhost/.pomerium/sign_out?pomerium_redirect_uri={target}"))
    assert alice.get("http://app.localhost/still").status_code == 200


def test_signed_sign_out_never_redirects_off_site(fresh: Stack, alice: Browser) -> None:
    cookie = cookie_of(alice)
    url = _signer(fresh).sign_in_url(
        "http://app.localhost", "https://evil.example/", path="/.pomerium/sign_out"
    )
    response = alice.get(url)
    assert response.status_code == 303
    assert urlsplit(response.headers["location"]).hostname == "authenticate.localhost"
    fresh.app.reset()
    gone = _get(fresh, "http://app.localhost/after", {"_gatehouse": cookie})
    assert gone.status_code == 302 and fresh.app.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/cb",
        "http://localhost.evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://127.0.0.1@evil.example/cb",
        "http://[::1]@evil.example/",
        "//127.0.0.1/cb",
    ],
)
def test_programmatic_login_only_returns_to_loopback(fresh: Stack, target: str) -> None:
    q = quote(target, safe="")
    _refused(_get(fresh, f"http://app.localhost/.pomerium/api/v1/login?pomerium_redirect_uri={q}"))


def test_control_programmatic_login_to_loopback(fresh: Stack) -> None:
    q = quote("http://127.0.0.1:9/cb", safe="")
    response = _get(fresh, f"http://app.localhost/.pomerium/api/v1/login?pomerium_redirect_uri={q}")
    assert response.status_code == 200
    assert response.text.startswith(f"{AUTH}/.pomerium/sign_in?")


@pytest.mark.parametrize("target", EVIL_TARGETS)
def test_depends_on_step_never_redirects_off_site(
    fresh: Stack, alice: Browser, target: str
) -> None:
    """``/.pomerium/depends_on`` is unsigned by design (the hosts come from the config), so
    its ``pomerium_redirect_uri`` must pass the allow list: signed in or not, every
    spelling of another site is a 400 with no redirect."""
    url = (
        f"http://app.localhost/.pomerium/depends_on?pomerium_redirect_uri={quote(target, safe='')}"
    )
    _refused(alice.get(url))
    _refused(Browser(fresh.port).get(url))


def test_control_depends_on_step_to_its_own_host(fresh: Stack, alice: Browser) -> None:
    target = quote("http://app.localhost/after", safe="")
    r = alice.get(f"http://app.localhost/.pomerium/depends_on?pomerium_redirect_uri={target}")
    assert r.status_code == 302 and r.headers["location"] == "http://app.localhost/after"
