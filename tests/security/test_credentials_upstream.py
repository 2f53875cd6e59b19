"""gatehouse's own credentials never reach an upstream (issue 12, item 2).

A programmatic token (``Authorization: Pomerium <token>`` or ``Bearer Pomerium-<token>``)
is a session credential valid on every route: an upstream that saw it could replay it
against every other route. The attack: sign in, get a token from the programmatic login,
call a route with it, and look at what the upstream received. The session cookie and
``X-Pomerium-Authorization`` stay behind too; an application's own ``Authorization`` passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from support.browser import Browser
from support.loop import LoopThread
from support.upstream import Upstream

from .hardening import ALICE, gatehouse, signed_in

APP = "http://app.localhost"


@pytest.fixture(scope="module")
def app(loop_thread: LoopThread) -> Iterator[Upstream]:
    up = Upstream(loop_thread, "app")
    yield up
    up.close()


@pytest.fixture(scope="module")
def setup(
    app: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Browser, str]]:
    routes = [{"from": APP, "to": app.url, "policy": ALICE, "pass_identity_headers": True}]
    with gatehouse(tmp_path_factory.mktemp("creds"), routes) as (gh, _):
        browser = signed_in(gh.port, f"{APP}/")
        r = browser.get(f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:9/cb")
        assert r.status_code == 200, r.text[:300]
        final = browser.follow(r.text, stop=lambda u: u.startswith("http://127.0.0.1:9/"))
        token = parse_qs(urlsplit(final.headers["location"]).query)["pomerium_jwt"][0]
        yield gh.port, browser, token


def _call(port: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{port}/data", headers={"Host": "app.localhost", **headers}, timeout=5
    )


@pytest.mark.parametrize(
    "form", ["Pomerium {t}", "Bearer Pomerium-{t}", "pomerium {t}", "POMERIUM  {t}"]
)
def test_programmatic_token_is_used_but_not_forwarded(
    setup: tuple[int, Browser, str], app: Upstream, form: str
) -> None:
    port, _, token = setup
    app.reset()
    r = _call(port, {"Authorization": form.format(t=token)})
    assert r.status_code == 200, r.text[:300]
    seen = app.requests[-1]
    assert seen.header("x-pomerium-jwt-assertion"), "authorized by the token"
    assert seen.header_all("authorization") == []
    assert token not in seen.raw_head.decode("latin-1")


def test_pomerium_authorization_header_and_session_cookie_stay_behind(
    setup: tuple[int, Browser, str], app: Upstream
) -> None:
    port, browser, token = setup
    cookie = browser.cookies["app.localhost"]["_gatehouse"]
    app.reset()
    r = _call(
        port,
        {
            "Cookie": f"theme=dark; _gatehouse={cookie}",
            "X-Pomerium-Authorization": token,
            "X_Pomerium_Authorization": f"Pomerium {token}",
        },
    )
    assert r.status_code == 200
    seen = app.requests[-1]
    raw = seen.raw_head.decode("latin-1")
    assert token not in raw and cookie not in raw
    assert seen.header("cookie") == "theme=dark"
    assert not {"x-pomerium-authorization", "x_pomerium_authorization"} & seen.header_names()


def test_an_applications_own_bearer_token_reaches_the_upstream_untouched(
    setup: tuple[int, Browser, str], app: Upstream
) -> None:
    port, browser, _ = setup
    cookie = browser.cookies["app.localhost"]["_gatehouse"]
    app.reset()
    r = _call(port, {"Cookie": f"_gatehouse={cookie}", "Authorization": "Bearer xyz.App-Token"})
    assert r.status_code == 200
    assert app.requests[-1].header_all("authorization") == ["Bearer xyz.App-Token"]
