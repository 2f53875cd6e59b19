"""Every spelling of gatehouse's own endpoints is handled cleanly (issue 12, item 7).

``POST //.pomerium/sign_out`` used to answer 500 ("Timeout should be used inside a task"):
whether a request ran in a Task was guessed from the raw target, while routing used the
normalised path. Now routing alone decides and the endpoint's step moves itself into a
Task. This sends every internal endpoint through every spelling the normaliser accepts
(doubled slashes, dot segments, encoded dots and letters, trailing slashes), by GET and
POST, on a route host and on the authenticate host: none may answer 5xx or log an error,
and no spelling of ``/.pomerium/...`` may reach the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.client import RawConnection
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Upstream

from .hardening import ALICE, gatehouse, signed_in, unhandled_errors

ENDPOINTS = [
    "/.pomerium/",
    "/.pomerium/user",
    "/.pomerium/sign_in",
    "/.pomerium/sign_out",
    "/.pomerium/signed_out",
    "/.pomerium/callback/",
    "/.pomerium/api/v1/login",
    "/.well-known/pomerium",
    "/.well-known/pomerium/jwks.json",
    "/oauth2/callback",
    "/ping",
    "/healthz",
]


def spellings(path: str) -> list[str]:
    """``path`` as clients and attackers may write it."""
    tail = path[1:]
    out = {
        path,
        "/" + path,
        "/./" + tail,
        "/a/../" + tail,
        "/a/b/../../" + tail,
        path.replace("/", "//"),
        path.replace(".", "%2e"),
        path.replace(".", "%2E"),
        path.replace(".pomerium", "%2E%70omerium"),
        path.replace("o", "%6F"),
        path.rstrip("/") + "/",
        path.rstrip("/") + "/.",
        path.rstrip("/") + "//",
        path + "?x=1",
    }
    return sorted(out)


CASES = [(p, s) for p in ENDPOINTS for s in spellings(p)]


@pytest.fixture(scope="module")
def app(loop_thread: LoopThread) -> Iterator[Upstream]:
    up = Upstream(loop_thread, "app")
    yield up
    up.close()


@pytest.fixture(scope="module")
def gh(app: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatehouseProcess]:
    routes = [{"from": "http://app.localhost", "to": app.url, "policy": ALICE}]
    # A revocation endpoint makes sign-out call the IdP (httpx, which needs a Task).
    extra = {"revocation_endpoint": "/revoke"}
    with gatehouse(tmp_path_factory.mktemp("internal"), routes, extra) as (process, _):
        yield process


def _send(port: int, method: str, target: str, host: str, cookie: str = "", csrf: str = "x") -> int:
    body = f"csrf={csrf}".encode() if method == "POST" else None
    headers = [("Content-Type", "application/x-www-form-urlencoded")] if body else []
    if cookie:
        headers.append(("Cookie", f"_gatehouse={cookie}"))
    with RawConnection(port) as conn:
        return conn.request(method, target, host, headers, body).status


def _session(port: int) -> tuple[str, str]:
    """A fresh signed-in session on app.localhost: (cookie, sign-out CSRF token)."""
    browser = signed_in(port, "http://app.localhost/.pomerium/")
    page = browser.get("http://app.localhost/.pomerium/").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    return browser.cookies["app.localhost"]["_gatehouse"], csrf


@pytest.mark.parametrize("host", ["app.localhost", "authenticate.localhost"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_spelling_of_an_internal_endpoint_fails(
    gh: GatehouseProcess, app: Upstream, host: str, method: str
) -> None:
    cookie = _session(gh.port)[0] if host == "app.localhost" else ""
    app.reset()
    bad = {}
    for _, target in CASES:
        status = _send(gh.port, method, target, host, cookie)
        if status >= 500:
            bad[target] = status
    assert bad == {}
    assert unhandled_errors(gh) == []
    assert not [r.path for r in app.requests if r.path.startswith("/.pomerium")]


@pytest.mark.parametrize(
    "target",
    [
        "/.pomerium/sign_out",
        "//.pomerium/sign_out",
        "/./.pomerium/sign_out",
        "/x/../.pomerium/sign_out",
        "/%2Epomerium/sign_out",
        "/%2e%70omerium//sign_out",
    ],
)
def test_signed_in_sign_out_through_any_spelling(
    gh: GatehouseProcess, app: Upstream, target: str
) -> None:
    cookie, csrf = _session(gh.port)
    app.reset()
    assert _send(gh.port, "POST", target, "app.localhost", cookie, csrf) == 303
    assert unhandled_errors(gh) == []
    assert app.requests == []
    # The session is gone: the user page asks for sign-in again.
    assert _send(gh.port, "GET", "/.pomerium/user", "app.localhost", cookie) == 401


def test_spellings_of_ping_reach_ping(gh: GatehouseProcess) -> None:
    for target in ("//ping", "/./ping", "/a/../ping", "/p%69ng"):
        assert _send(gh.port, "GET", target, "app.localhost") == 200, target
