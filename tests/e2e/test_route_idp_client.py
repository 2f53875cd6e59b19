"""Per-route OAuth clients (Pomerium's route ``idp_client_id`` / ``idp_client_secret``).

A real IdP (panva's oidc-provider) knows two clients; one route signs in through the
second. The IdP itself checks that the code is redeemed by the client it was issued to
(with that client's secret) and gatehouse checks the ID token's ``aud`` against the
route's client, so a completed sign-in proves both. A session made through one client is
not accepted on a route of the other: the user goes back to the IdP.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from authenticate.conftest import ProviderProcess, run_provider
from e2e.conftest import AUTH_URL, sso_config
from gatehouse.authenticate.redirects import RedirectSigner
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

APP = "http://app.localhost"
SECOND = "http://second.localhost"
SECOND_ID = "gatehouse-second"
SECOND_SECRET = "second-client-secret-0123456789abcdef-0123456789"


@pytest.fixture(scope="module")
def two_client_idp() -> Iterator[ProviderProcess]:
    with run_provider(
        REDIRECT_URIS=f"{AUTH_URL}/oauth2/callback",
        POST_LOGOUT_REDIRECT_URIS=f"{AUTH_URL}/.pomerium/signed_out",
        EXTRA_CLIENTS=f"{SECOND_ID}:{SECOND_SECRET}",
    ) as p:
        yield p


@pytest.fixture
def start(
    two_client_idp: ProviderProcess, tmp_path: Path
) -> Iterator[Callable[..., GatehouseProcess]]:
    started: list[GatehouseProcess] = []

    def run(routes: list[dict[str, object]]) -> GatehouseProcess:
        workdir = tmp_path / f"gh{len(started)}"
        workdir.mkdir()
        gh = GatehouseProcess(sso_config(two_client_idp, routes), workdir)
        started.append(gh)
        return gh.start()

    yield run
    for gh in started:
        assert gh.stop() == 0


def second_client(secret: str = SECOND_SECRET) -> dict[str, object]:
    return {"idp_client_id": SECOND_ID, "idp_client_secret": secret}


def idp_visits(browser: Browser, idp: ProviderProcess) -> list[str]:
    """The client ids of the authorization requests the browser made to the IdP."""
    return [
        parse_qs(urlsplit(h.url).query)["client_id"][0]
        for h in browser.history
        if h.url.startswith(idp.issuer + "/auth?")
    ]


def whoami(browser: Browser, origin: str) -> int:
    r = browser.get(f"{origin}/.pomerium/user", headers={"Accept": "application/json"})
    return r.status_code


def test_route_signs_in_through_its_own_client(
    start: Callable[..., GatehouseProcess],
    two_client_idp: ProviderProcess,
    app_upstream: Upstream,
) -> None:
    allow = {"to": app_upstream.url, "allow_any_authenticated_user": True}
    gh = start([{"from": APP, **allow}, {"from": SECOND, **allow, **second_client()}])
    browser = Browser(gh.port)
    assert browser.follow(f"{SECOND}/x").status_code == 200
    assert browser.last_url == f"{SECOND}/x"
    assert idp_visits(browser, two_client_idp) == [SECOND_ID]
    # The sign-in URL named the client, signed, as Pomerium's pomerium_idp_id.
    sign_in = next(h.url for h in browser.history if "/.pomerium/sign_in?" in h.url)
    assert parse_qs(urlsplit(sign_in).query)["pomerium_idp_id"][0]
    # The other route uses the global client: its session is another sign-in at the IdP
    # (the authenticate host's session is the second client's, so it is not handed over).
    assert browser.follow(f"{APP}/y").status_code == 200
    assert idp_visits(browser, two_client_idp) == [SECOND_ID, "gatehouse"]
    # Each host keeps its own session: no further IdP round-trip for either.
    assert browser.follow(f"{SECOND}/z").status_code == 200
    assert browser.follow(f"{APP}/w").status_code == 200
    assert len(idp_visits(browser, two_client_idp)) == 2
    assert app_upstream.requests[-1].path == "/w"


def test_session_of_another_client_is_refused_on_the_same_host(
    start: Callable[..., GatehouseProcess],
    two_client_idp: ProviderProcess,
    app_upstream: Upstream,
) -> None:
    allow = {"to": app_upstream.url, "allow_any_authenticated_user": True}
    gh = start(
        [
            {"from": APP, "prefix": "/b", **allow, **second_client()},
            {"from": APP, **allow},
        ]
    )
    browser = Browser(gh.port)
    assert browser.follow(f"{APP}/a").status_code == 200
    assert idp_visits(browser, two_client_idp) == ["gatehouse"]
    seen = len(app_upstream.requests)
    # Same host, same cookie: the global client's session does not open the /b route.
    r = browser.get(f"{APP}/b")
    assert r.status_code == 302
    assert r.headers["location"].startswith(f"{AUTH_URL}/.pomerium/sign_in?")
    assert "pomerium_idp_id=" in r.headers["location"]
    assert len(app_upstream.requests) == seen
    assert browser.follow(f"{APP}/b").status_code == 200
    assert idp_visits(browser, two_client_idp) == ["gatehouse", SECOND_ID]
    assert app_upstream.requests[-1].path == "/b"


def test_wrong_client_secret_fails_closed(
    start: Callable[..., GatehouseProcess],
    two_client_idp: ProviderProcess,
    app_upstream: Upstream,
) -> None:
    allow = {"to": app_upstream.url, "allow_any_authenticated_user": True}
    gh = start([{"from": SECOND, **allow, **second_client("not-the-secret")}])
    browser = Browser(gh.port)
    r = browser.follow(f"{SECOND}/x")
    # The IdP refuses the code exchange with the wrong secret: no session, no upstream.
    assert r.status_code in (401, 502, 503), r.status_code
    assert "_gatehouse" not in browser.cookies.get("second.localhost", {})
    assert app_upstream.requests == []
    assert whoami(browser, SECOND) == 401


def test_sign_in_url_naming_an_unknown_client_is_refused(
    start: Callable[..., GatehouseProcess],
    two_client_idp: ProviderProcess,
    app_upstream: Upstream,
) -> None:
    allow = {"to": app_upstream.url, "allow_any_authenticated_user": True}
    gh = start([{"from": SECOND, **allow, **second_client()}])
    browser = Browser(gh.port)
    first = browser.get(f"{SECOND}/")  # a binding cookie, as a real sign-in has
    query = parse_qs(urlsplit(first.headers["location"]).query)
    secret = base64.b64decode(yaml.safe_load(gh.config_path.read_text())["shared_secret"])

    def signed(idp_id: str) -> str:
        extra = [("gatehouse_binding", query["gatehouse_binding"][0]), ("pomerium_idp_id", idp_id)]
        return RedirectSigner(secret).sign_in_url(AUTH_URL, f"{SECOND}/", extra=extra)

    # The route's own id (as gatehouse signed it) starts a sign-in with the second client...
    ok = browser.get(signed(query["pomerium_idp_id"][0]))
    assert ok.status_code == 302 and ok.headers["location"].startswith(two_client_idp.issuer)
    assert f"client_id={SECOND_ID}" in ok.headers["location"]
    # ...an id naming no configured client is refused, even though validly signed.
    r = browser.get(signed("bm8tc3VjaC1jbGllbnQ"))
    assert r.status_code == 400
    assert "Traceback" not in r.text
    assert "_gatehouse" not in browser.cookies.get("authenticate.localhost", {})
