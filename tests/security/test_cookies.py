"""Cookies and sessions: forged, malformed, replayed, fixed, tossed, and signed out.

The session cookie is an encrypted handle bound to one host; the record lives in the
store. Each case sends a hostile cookie (or replays a real one where it does not belong)
and asserts the upstream saw nothing, or saw the right user.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from support.browser import Browser
from support.client import RawConnection
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Upstream

from .conftest import ALICE, Stack, cookie_of, sign_in, sso_config
from .idp import HostileIdp


def _with_cookie(stack: Stack, host: str, cookie: str, accept: str = "text/html") -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{stack.port}/c",
        headers={"Host": host, "Cookie": cookie, "Accept": accept},
        timeout=5,
    )


def _csrf(browser: Browser, host: str = "app.localhost") -> str:
    page = browser.get(f"http://{host}/.pomerium/")
    assert page.status_code == 200, page.status_code
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _sign_out(browser: Browser, csrf: str, host: str = "app.localhost") -> httpx.Response:
    return browser.request(
        "POST",
        f"http://{host}/.pomerium/sign_out",
        data={"csrf": csrf},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "A" * 2000,
        "!!!!;;;",
        '"quoted"',
        base64.urlsafe_b64encode(os.urandom(80)).decode().rstrip("="),
        "AQ" + "A" * 100,
        "%00%00",
    ],
    ids=["empty", "garbage", "long", "punct", "quoted", "random-b64", "version-prefix", "pct-nul"],
)
def test_malformed_or_forged_cookie_is_unauthenticated(fresh: Stack, value: str) -> None:
    response = _with_cookie(fresh, "app.localhost", f"_gatehouse={value}")
    assert response.status_code == 302
    assert urlsplit(response.headers["location"]).hostname == "authenticate.localhost"
    api = _with_cookie(fresh, "app.localhost", f"_gatehouse={value}", accept="application/json")
    assert api.status_code == 401
    assert fresh.app.requests == []


def test_tampered_real_cookie_is_refused(fresh: Stack, alice: Browser) -> None:
    real = cookie_of(alice)
    for bad in (real[:-1] + ("A" if real[-1] != "A" else "B"), real[:-8], real + "AAAA"):
        assert _with_cookie(fresh, "app.localhost", f"_gatehouse={bad}").status_code == 302
    assert fresh.app.requests == []


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("app.localhost", "other.localhost"),
        ("authenticate.localhost", "app.localhost"),
        ("app.localhost", "port.localhost:8080"),
    ],
)
def test_cookie_bound_to_one_host_is_refused_on_another(
    fresh: Stack, alice: Browser, source: str, target: str
) -> None:
    """A cookie stolen from (or tossed by) one route host is no session on another."""
    cookie = cookie_of(alice, source)
    response = _with_cookie(fresh, target, f"_gatehouse={cookie}", accept="application/json")
    assert response.status_code == 401
    assert fresh.app.requests == []


def test_session_fixation_attacker_value_is_never_adopted(fresh: Stack) -> None:
    """A value planted before sign-in is replaced by a fresh one, and stays worthless."""
    planted = "AQ" + base64.urlsafe_b64encode(os.urandom(70)).decode().rstrip("=")
    browser = Browser(fresh.port, cookies={"app.localhost": {"_gatehouse": planted}})
    assert browser.follow("http://app.localhost/").status_code == 200
    assert cookie_of(browser) != planted
    fresh.app.reset()
    assert _with_cookie(fresh, "app.localhost", f"_gatehouse={planted}").status_code == 302
    assert fresh.app.requests == []


def test_each_sign_in_is_a_new_session(fresh: Stack) -> None:
    first, second = sign_in(fresh.port), sign_in(fresh.port)
    assert cookie_of(first) != cookie_of(second)
    sids = {r.header("x-pomerium-jwt-assertion") for r in fresh.app.requests}
    assert len(sids) == 2


def test_session_cookie_attributes(fresh: Stack) -> None:
    browser = Browser(fresh.port)
    browser.follow("http://app.localhost/")
    [hop] = [h for h in browser.history if "/.pomerium/callback/" in h.url]
    [header] = [
        c for c in hop.response.headers.get_list("set-cookie") if c.startswith("_gatehouse=")
    ]
    attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "domain" not in attributes  # host-only: no sibling subdomain receives it
    assert "samesite=lax" in header.lower()


def test_gatehouse_cookie_is_not_forwarded_but_others_are(fresh: Stack, alice: Browser) -> None:
    cookie = cookie_of(alice)
    response = _with_cookie(fresh, "app.localhost", f"theme=dark; _gatehouse={cookie}; lang=en")
    assert response.status_code == 200
    seen = fresh.app.requests[-1]
    assert seen.header_all("cookie") == ["theme=dark; lang=en"]
    assert cookie.encode() not in fresh.app.raw_bytes


def test_tossed_invalid_cookie_before_the_real_one(fresh: Stack, alice: Browser) -> None:
    """Cookie tossing from a sibling host can put a second ``_gatehouse`` first in the
    header. Debatable, as Pomerium: gatehouse reads the first one, so a tossed cookie can
    sign a user out of a request (denial of service) but never sign them in as anyone
    else unless it is a valid cookie *for this host*. ``__Host-`` cookie names (HTTPS)
    stop tossing altogether."""
    cookie = cookie_of(alice)
    response = _with_cookie(
        fresh, "app.localhost", f"_gatehouse=tossed; _gatehouse={cookie}", "application/json"
    )
    assert response.status_code in (200, 401)
    for seen in fresh.app.requests:
        assert seen.header("x-pomerium-claim-email") == "alice@example.com"


def test_cookie_dies_on_every_host_after_sign_out(fresh: Stack, alice: Browser) -> None:
    assert alice.follow("http://other.localhost/").status_code == 200
    app, other = cookie_of(alice), cookie_of(alice, "other.localhost")
    response = _sign_out(alice, _csrf(alice))
    assert response.status_code == 303
    fresh.app.reset()
    assert _with_cookie(fresh, "app.localhost", f"_gatehouse={app}").status_code == 302
    assert _with_cookie(fresh, "other.localhost", f"_gatehouse={other}").status_code == 302
    assert fresh.app.requests == []


@pytest.mark.parametrize(
    "form",
    [None, "", "csrf=", "csrf=deadbeef", "csrf=" + "0" * 64],
    ids=["no-body", "empty", "blank", "short", "wrong"],
)
def test_sign_out_post_without_the_csrf_token_is_refused(
    fresh: Stack, alice: Browser, form: str | None
) -> None:
    """A cross-site form posting to ``/.pomerium/sign_out`` cannot sign a user out."""
    response = alice.request(
        "POST",
        "http://app.localhost/.pomerium/sign_out",
        content=(form or "").encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil"},
    )
    assert response.status_code == 400
    assert alice.get("http://app.localhost/still").status_code == 200


def test_csrf_token_of_another_session_is_refused(fresh: Stack, alice: Browser) -> None:
    other = sign_in(fresh.port)
    assert _sign_out(alice, _csrf(other)).status_code == 400
    assert alice.get("http://app.localhost/still").status_code == 200


def test_login_csrf_hand_off_url_is_bound_to_the_browser(fresh: Stack) -> None:
    """issue 12 item 1 (fixed): an attacker signs in, stops before the hand-off and sends
    the URL to a victim; the victim's browser must not be signed in as the attacker."""
    fresh.idp.user = {**fresh.idp.user, "email": "mallory@example.com", "sub": "mallory"}
    attacker = Browser(fresh.port)
    attacker.follow(
        "http://app.localhost/", stop=lambda u: "/.pomerium/callback/" in urlsplit(u).path
    )
    handoff = attacker.history[-1].response.headers["location"]
    victim = Browser(fresh.port)
    response = victim.get(handoff)
    assert response.status_code == 400
    assert "_gatehouse" not in victim.cookies.get("app.localhost", {})
    assert fresh.app.requests == []


def test_http_route_with_a_port_gets_no_secure_cookie(fresh: Stack) -> None:
    """issue 12 item 9 (fixed): ``from: http://host:8080`` is plain HTTP; a ``Secure``
    cookie would never be sent back and the user could not sign in."""
    browser = Browser(fresh.port)
    final = browser.follow("http://port.localhost:8080/")
    assert final.status_code == 200
    for hop in browser.history:
        if urlsplit(hop.url).hostname == "port.localhost":
            for header in hop.response.headers.get_list("set-cookie"):
                assert "secure" not in header.lower(), header


# -- several workers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(
    loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatehouseProcess, Upstream]]:
    idp = HostileIdp().start()
    app = Upstream(loop_thread, "app2")
    routes = [{"from": "http://app.localhost", "to": app.url, "policy": [{"allow": ALICE}]}]
    gh = GatehouseProcess(
        {**sso_config(idp, routes), "databroker_storage_type": "sqlite", "workers": 2},
        tmp_path_factory.mktemp("workers"),
    )
    try:
        gh.start()
        yield gh, app
    finally:
        code = gh.stop()
        app.close()
        idp.stop()
        assert code == 0, gh.stderr_text()


def test_sign_out_is_immediate_in_every_worker(
    two_workers: tuple[GatehouseProcess, Upstream],
) -> None:
    """issue 12 item 5 (fixed): a sign-out holds in every worker when it returns."""
    gh, app = two_workers
    browser = sign_in(gh.port)
    cookie = cookie_of(browser)

    # Keep-alive connections opened before the sign-out, spread over both workers (the
    # kernel balances new connections); each has served the session, so it is cached.
    conns = [RawConnection(gh.port) for _ in range(12)]
    try:
        headers = [("Cookie", f"_gatehouse={cookie}")]
        assert all(c.request("GET", "/", "app.localhost", headers).status == 200 for c in conns)
        assert _sign_out(browser, _csrf(browser)).status_code == 303
        app.reset()
        for c in conns:  # at once, so nothing but an immediate invalidation can refuse them
            c.send(
                b"GET /after HTTP/1.1\r\nHost: app.localhost\r\n"
                + b"Cookie: _gatehouse="
                + cookie.encode()
                + b"\r\n\r\n"
            )
        codes = [c.read_response().status for c in conns]
    finally:
        for c in conns:
            c.close()
    assert codes == [401] * len(conns)
    assert app.requests == []
