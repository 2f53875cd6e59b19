"""``depends_on``: one sign-in at a route signs the browser in to the hosts it names too.

Pomerium chains its route callbacks; gatehouse walks the browser through each named host,
which signs in the usual way (its own binding cookie, the authenticate host's session
handed over without the IdP). The hand-offs stay bound to the browser: a captured one is
refused in another browser, as in test_login_csrf.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from authenticate.conftest import ProviderProcess
from gatehouse.config.routes import RouteOptions
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

APP = "http://app.localhost"
OTHER = "http://other.localhost"
THIRD = "http://third.localhost"
CALLBACK = "/.pomerium/callback/"


@pytest.fixture
def gh(start_sso: Callable[..., GatehouseProcess], app_upstream: Upstream) -> GatehouseProcess:
    allow = {"to": app_upstream.url, "allow_any_authenticated_user": True}
    return start_sso(
        [
            {"from": APP, **allow, "depends_on": ["other.localhost", f"{THIRD}/ignored"]},
            {"from": OTHER, **allow},
            {"from": THIRD, **allow},
        ]
    )


def idp_requests(browser: Browser, idp: ProviderProcess) -> int:
    return sum(1 for h in browser.history if h.url.startswith(idp.issuer + "/auth?"))


def test_one_sign_in_covers_the_named_hosts(
    gh: GatehouseProcess, idp: ProviderProcess, app_upstream: Upstream
) -> None:
    browser = Browser(gh.port)
    r = browser.follow(f"{APP}/start?q=1")
    assert r.status_code == 200 and browser.last_url == f"{APP}/start?q=1"
    assert idp_requests(browser, idp) == 1
    for host in ("other.localhost", "third.localhost"):
        assert "_gatehouse" in browser.cookies[host]
    # No further sign-in: one request each, straight to the upstream.
    before = len(browser.history)
    assert browser.get(f"{OTHER}/o").status_code == 200
    assert browser.get(f"{THIRD}/t").status_code == 200
    assert len(browser.history) == before + 2
    assert [q.target for q in app_upstream.requests[-3:]] == ["/start?q=1", "/o", "/t"]


def test_a_route_without_depends_on_signs_in_alone(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    browser = Browser(gh.port)
    assert browser.follow(f"{OTHER}/").status_code == 200
    assert "_gatehouse" not in browser.cookies.get("app.localhost", {})
    assert "_gatehouse" not in browser.cookies.get("third.localhost", {})


def test_chained_handoff_is_refused_in_another_browser(
    gh: GatehouseProcess, idp: ProviderProcess
) -> None:
    attacker = Browser(gh.port)
    captured: list[str] = []

    def stop(url: str) -> bool:
        if url.startswith(f"{OTHER}{CALLBACK}"):
            captured.append(url)
            return True
        return False

    attacker.follow(f"{APP}/", stop=stop)
    assert captured, [h.url for h in attacker.history]
    victim = Browser(gh.port)
    victim.follow(f"{OTHER}/", stop=lambda u: True)  # a binding cookie of their own
    r = victim.get(captured[0])
    assert r.status_code == 400 and "set-cookie" not in r.headers
    assert "_gatehouse" not in victim.cookies.get("other.localhost", {})
    # The attacker's own browser completes the chain with it.
    assert attacker.follow(captured[0]).status_code == 200
    assert attacker.last_url == f"{APP}/"


def test_step_refuses_hosts_and_targets_not_configured(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    # A step on a host the target's route does not name.
    r = browser.get(f"{APP}/.pomerium/depends_on?pomerium_redirect_uri={OTHER}/")
    assert r.status_code == 400
    # A target outside the configured hosts (no open redirect).
    r = browser.get(f"{APP}/.pomerium/depends_on?pomerium_redirect_uri=http://evil.example/")
    assert r.status_code == 400
    assert "evil" not in r.headers.get("location", "")


def test_config_follows_pomerium() -> None:
    def load(depends_on: list[str]) -> RouteOptions:
        return RouteOptions.model_validate(
            {"from": "https://a.example.com", "to": "http://x", "depends_on": depends_on}
        )

    assert load(["B.example.com", "https://c.example.com:8443/x"]).depends_on == [
        "b.example.com",
        "c.example.com:8443",
    ]
    with pytest.raises(ValueError, match="limited to 5"):
        load([f"h{i}.example.com" for i in range(6)])
    with pytest.raises(ValueError, match="unsupported depends_on"):
        load(["not/a-url"])
