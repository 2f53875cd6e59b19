"""Sign-out holds in every worker at once (hardening issue 12, item 5).

A real gatehouse with ``workers: 2`` sharing the SQLite store: sign in, make sure both
workers have the session cached, sign out, and then hammer with the old cookie over
fresh connections. Every request must be refused, on both workers, with no grace period
(the store's change poll runs every 0.5 s; the revocation stamp must not wait for it).
Which worker answered is read from the decision log lines, which carry the process id.
"""

from __future__ import annotations

from collections.abc import Callable

from support.browser import Browser
from support.client import RawConnection
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

APP = "http://app.localhost"
#: Requests with the old cookie right after the sign-out returned.
HAMMER = 300


def _pids(gh: GatehouseProcess, message: str, since: int = 0) -> set[int]:
    return {int(r["pid"]) for r in gh.logs()[since:] if r.get("message") == message}


def _get(gh: GatehouseProcess, cookie: str) -> int:
    # A fresh connection each time, so the kernel spreads them over both workers.
    conn = RawConnection(gh.port)
    try:
        headers = [("Cookie", f"_gatehouse={cookie}"), ("Accept", "application/json")]
        return conn.request("GET", "/x", "app.localhost", headers).status
    finally:
        conn.sock.close()


def test_sign_out_is_refused_by_every_worker_immediately(
    start_sso: Callable[..., GatehouseProcess], app_upstream: Upstream
) -> None:
    gh = start_sso(
        [{"from": APP, "to": app_upstream.url, "allow_any_authenticated_user": True}],
        databroker_storage_type="sqlite",
        workers=2,
        log_level="debug",  # "access allow" lines (with the worker's pid) are debug-level
        # No refresh token, so the sign-out makes no IdP call: its response follows the
        # store write within milliseconds, well inside the 0.5 s change poll, so without
        # the revocation stamp the other worker would still let the cookie in.
        idp_scopes=["openid", "profile", "email"],
    )
    browser = Browser(gh.port)
    assert browser.follow(f"{APP}/").status_code == 200
    cookie = browser.cookies["app.localhost"]["_gatehouse"]
    # Both workers serve (and so cache) the session before the sign-out.
    for _ in range(400):
        assert _get(gh, cookie) == 200
        if len(_pids(gh, "access allow")) == 2:
            break
    assert len(_pids(gh, "access allow")) == 2, "the requests never reached both workers"
    page = browser.get(f"{APP}/.pomerium/")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    mark = len(gh.logs())
    out = browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
    assert out.status_code == 303
    statuses = [_get(gh, cookie) for _ in range(HAMMER)]
    assert statuses == [401] * HAMMER, f"{statuses.count(200)} requests still let in"
    assert len(_pids(gh, "access needs-login", mark)) == 2, "refusals did not come from both"
