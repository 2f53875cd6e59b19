"""Login CSRF through the sign-in hand-off, end to end (hardening issue 12, item 1).

The attack: the attacker signs in as themselves, stops at the redirect to
``<route>/.pomerium/callback/?pomerium_handoff=…`` and makes a victim's browser open it.
The hand-off is bound to the browser that started the sign-in (the route host's binding
cookie), so it is refused there and the victim's cookie is left alone, while the same URL
still works in the attacker's own browser (the refusal is the binding, nothing else).

The attacker signs in as ``bob`` by rewriting the ``login_hint`` of the authorization
request in their own browser; the victim is ``alice`` (the config's hint).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from authenticate.conftest import ProviderProcess
from gatehouse.authenticate.redirects import RedirectSigner
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

APP = "http://app.localhost"
OTHER = "http://other.localhost"
SECURE = "https://secure.localhost"
CALLBACK = "/.pomerium/callback/"
BINDING = "_gatehouse_binding"


def routes(upstream: Upstream) -> list[dict[str, object]]:
    allow = {"to": upstream.url, "allow_any_authenticated_user": True}
    return [{"from": APP, **allow}, {"from": OTHER, **allow}, {"from": SECURE, **allow}]


@pytest.fixture
def gh(start_sso: Callable[..., GatehouseProcess], app_upstream: Upstream) -> GatehouseProcess:
    return start_sso(routes(app_upstream))


def handoff_url(browser: Browser, url: str, idp: ProviderProcess, login_hint: str) -> str:
    """Sign ``browser`` in as ``login_hint`` and stop before the route host's callback."""
    captured: list[str] = []

    def stop(u: str) -> bool:
        if u.startswith(idp.issuer) and "login_hint=alice" in u:
            captured.append(u.replace("login_hint=alice", f"login_hint={login_hint}"))
            return True
        if CALLBACK in u:
            captured.append(u)
            return True
        return False

    browser.follow(url, stop=stop)
    if CALLBACK not in captured[-1]:
        browser.follow(captured[-1], stop=stop)
    assert CALLBACK in captured[-1], captured
    return captured[-1]


def whoami(browser: Browser, origin: str = APP) -> httpx.Response:
    return browser.get(f"{origin}/.pomerium/user", headers={"Accept": "application/json"})


def refusals(gh: GatehouseProcess) -> int:
    return sum(1 for r in gh.logs() if r.get("message", "").startswith("sign-in hand-off refused"))


def test_attackers_handoff_is_refused_in_a_fresh_victim_browser(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    attacker = Browser(gh.port)
    url = handoff_url(attacker, f"{APP}/", idp, "bob")
    victim = Browser(gh.port)
    r = victim.get(url)
    assert r.status_code == 400
    assert "not started in this browser" in r.text
    assert "set-cookie" not in r.headers
    assert victim.cookies.get("app.localhost", {}) == {}
    assert whoami(victim).status_code == 401
    assert refusals(gh) == 1
    # The token itself was fine: the attacker's own browser still redeems it.
    mine = attacker.get(url)
    assert mine.status_code == 302 and "_gatehouse" in attacker.cookies["app.localhost"]
    assert whoami(attacker).json()["email"] == "bob@example.com"


def test_signed_in_victim_keeps_their_own_session(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    victim = Browser(gh.port)
    assert victim.follow(f"{APP}/").status_code == 200
    before = whoami(victim).json()
    cookie = victim.cookies["app.localhost"]["_gatehouse"]
    assert before["email"] == "alice@example.com"
    url = handoff_url(Browser(gh.port), f"{APP}/", idp, "bob")
    # The victim has a binding cookie of their own (from their sign-in): still refused.
    assert BINDING in victim.cookies["app.localhost"]
    r = victim.get(url)
    assert r.status_code == 400 and "set-cookie" not in r.headers
    assert victim.cookies["app.localhost"]["_gatehouse"] == cookie
    assert whoami(victim).json() == before
    assert refusals(gh) == 1


def test_already_signed_in_on_the_authenticate_host_is_bound_too(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    attacker = Browser(gh.port)
    attacker.follow(handoff_url(attacker, f"{APP}/", idp, "bob"))
    # Signed in on the authenticate host: the second route host's hand-off comes from
    # sign_in directly, without the IdP.
    url = handoff_url(attacker, f"{OTHER}/", idp, "bob")
    assert not any(h.url.startswith(idp.issuer) for h in attacker.history[-3:])
    victim = Browser(gh.port)
    victim.follow(f"{OTHER}/", stop=lambda u: True)  # the victim has a binding cookie too
    assert BINDING in victim.cookies["other.localhost"]
    r = victim.get(url)
    assert r.status_code == 400 and "set-cookie" not in r.headers
    assert "_gatehouse" not in victim.cookies["other.localhost"]
    assert attacker.follow(url).status_code == 200
    assert whoami(attacker, OTHER).json()["email"] == "bob@example.com"


def test_sign_in_urls_carry_the_binding_and_refuse_without_it(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    browser = Browser(gh.port)
    first = browser.get(f"{APP}/a")
    second = browser.get(f"{APP}/b")
    set_cookie = first.headers["set-cookie"]
    assert set_cookie.startswith(f"{BINDING}=")
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Max-Age=900" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP route
    # Two tabs: the second sign-in reuses the first one's binding.
    assert second.headers["set-cookie"].split(";")[0] == set_cookie.split(";")[0]
    binding = parse_qs(urlsplit(first.headers["location"]).query)["gatehouse_binding"][0]
    assert len(binding) == 43
    assert binding not in set_cookie  # only a hash of the cookie travels
    # gatehouse's own pages bind their sign-in redirects too.
    page = browser.get(f"{APP}/.pomerium/")
    assert page.status_code == 302 and "gatehouse_binding=" in page.headers["location"]
    assert page.headers["set-cookie"].split(";")[0] == set_cookie.split(";")[0]
    # A validly signed sign-in URL to a route host without a binding (as an older
    # gatehouse made them) is refused rather than answered with an unbound hand-off.
    secret = base64.b64decode(yaml.safe_load(gh.config_path.read_text())["shared_secret"])
    unbound = RedirectSigner(secret).sign_in_url("http://authenticate.localhost", f"{APP}/")
    assert browser.get(unbound).status_code == 400


def test_two_tabs_both_complete(gh: GatehouseProcess, idp: ProviderProcess) -> None:
    browser = Browser(gh.port)
    tab1 = handoff_url(browser, f"{APP}/one", idp, "alice")
    browser.cookies.pop("authenticate.localhost", None)  # the second tab signs in afresh
    tab2 = handoff_url(browser, f"{APP}/two", idp, "alice")
    assert browser.follow(tab1).status_code == 200 and browser.last_url == f"{APP}/one"
    assert browser.follow(tab2).status_code == 200 and browser.last_url == f"{APP}/two"
    assert refusals(gh) == 0


def test_https_route_binding_cookie_uses_the_host_prefix(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    browser = Browser(gh.port)
    first = browser.get(f"{SECURE}/")
    set_cookie = first.headers["set-cookie"]
    assert set_cookie.startswith(f"__Host-{BINDING}=")
    assert "; Secure" in set_cookie and "Path=/" in set_cookie and "Domain" not in set_cookie
    assert browser.follow(f"{SECURE}/x").status_code == 200
    # The plain-named cookie (which a sibling subdomain could toss) does not count.
    victim = Browser(gh.port)
    value = browser.cookies["secure.localhost"][f"__Host-{BINDING}"]
    victim.cookies["secure.localhost"] = {BINDING: value}
    url = handoff_url(Browser(gh.port), f"{SECURE}/", idp, "bob")
    assert victim.get(url).status_code == 400


def test_binding_cookie_never_reaches_the_upstream(
    gh: GatehouseProcess, app_upstream: Upstream
) -> None:
    browser = Browser(gh.port)
    assert browser.follow(f"{APP}/").status_code == 200
    browser.cookies["app.localhost"]["theirs"] = "1"
    assert browser.get(f"{APP}/c").status_code == 200
    assert app_upstream.requests[-1].header("cookie") == "theirs=1"
    assert browser.follow(f"{SECURE}/").status_code == 200
    browser.cookies["secure.localhost"]["theirs"] = "2"
    assert browser.get(f"{SECURE}/d").status_code == 200
    assert app_upstream.requests[-1].header("cookie") == "theirs=2"


def test_programmatic_login_sets_no_route_host_cookie(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    r = browser.get(f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:9/cb")
    login_url = r.text
    assert login_url.startswith("http://authenticate.localhost/.pomerium/sign_in?")
    final = browser.follow(login_url, stop=lambda u: u.startswith("http://127.0.0.1:9/"))
    token = parse_qs(urlsplit(final.headers["location"]).query)["pomerium_jwt"][0]
    assert browser.cookies.get("app.localhost", {}) == {}
    assert not any(CALLBACK in h.url for h in browser.history)
    api = gh.get("/x", "app.localhost", headers={"Authorization": f"Pomerium {token}"})
    assert api.status_code == 200
    # Already signed in on the authenticate host: straight to the loopback target.
    again = browser.get(
        browser.get(
            f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:9/cb"
        ).text
    )
    assert again.status_code == 302 and again.headers["location"].startswith(
        "http://127.0.0.1:9/cb?pomerium_jwt="
    )
    # The old route-host completion endpoint, which set no cookie but read one, is gone.
    assert browser.get(f"{APP}/.pomerium/api/v1/login/complete").status_code == 404
