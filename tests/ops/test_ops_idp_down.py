"""The IdP goes down and comes back: signed-in users keep working, sign-ins fail clearly.

panva's oidc-provider runs on a fixed port so it can be stopped and started again at the
same issuer URL (it then has new signing keys and has forgotten every grant, as a real
IdP restored from scratch would). gatehouse is never restarted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from ops_helpers import RestartableProvider

from authenticate.conftest import CLIENT_ID, CLIENT_SECRET
from conftest import PROVIDER_URIS
from e2e.conftest import sso_config
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

pytestmark = pytest.mark.e2e

APP = "http://app.localhost"


@pytest.fixture
def provider() -> Iterator[RestartableProvider]:
    p = RestartableProvider(
        {"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET, **PROVIDER_URIS}
    ).start()
    yield p
    p.stop()


def _stop_before_callback(browser: Browser) -> str:
    """Run a sign-in up to (not including) gatehouse's /oauth2/callback; return that URL."""
    seen: list[str] = []
    browser.follow(f"{APP}/wanted", stop=lambda u: "/oauth2/callback" in u and not seen.append(u))
    assert seen, "the flow never reached the callback"
    return seen[0]


def test_idp_outage_keeps_sessions_and_recovers_without_restart(  # type: ignore[no-untyped-def]
    provider: RestartableProvider, tmp_path: Path, make_upstream: Callable[..., Upstream]
) -> None:
    app = make_upstream("app")
    routes = [
        {
            "from": APP,
            "to": app.url,
            "pass_identity_headers": True,
            "allow_any_authenticated_user": True,
        }
    ]
    gh = GatehouseProcess(sso_config(provider, routes), tmp_path).start()
    try:
        signed_in = Browser(gh.port)
        assert signed_in.follow(f"{APP}/").status_code == 200
        midway = Browser(gh.port)
        callback = _stop_before_callback(midway)

        provider.stop()

        # 1. A signed-in user does not notice (no refresh is due: tokens live 300 s).
        for i in range(5):
            r = signed_in.get(f"{APP}/during/{i}")
            assert r.status_code == 200, r.text
        # 2. A sign-in that needs the IdP's token endpoint gets a clear 503 page, not a 500.
        r = midway.get(callback)
        assert r.status_code == 503, (r.status_code, r.text[:300])
        assert "text/html" in r.headers.get("content-type", "")
        assert "Traceback" not in r.text and "Connect" not in r.text  # no exception text
        # ... and an operator sees why: an error line naming the IdP call, an access line
        # with the error kind.
        gh.wait_log(
            lambda x: x.get("level") == "error" and provider.issuer in str(x.get("message"))
        )
        gh.wait_access(lambda x: x.get("status") == 503 and x.get("error") == "IdpUnavailable")
        # 3. A new visitor is sent towards the IdP (gatehouse has its metadata cached) or
        #    gets the same 503 page; never a 500.
        fresh = Browser(gh.port)
        first = fresh.get(f"{APP}/")
        assert first.status_code == 302
        sign_in = fresh.get(first.headers["location"])
        assert sign_in.status_code in (302, 503), sign_in.status_code
        if sign_in.status_code == 302:
            with pytest.raises(httpx.ConnectError):
                fresh.get(sign_in.headers["location"])  # the browser cannot reach the IdP

        provider.start()  # same port, same issuer, new keys

        # Sign-in works again, without restarting gatehouse (new IdP signing keys included).
        again = Browser(gh.port)
        final = again.follow(f"{APP}/back")
        assert final.status_code == 200, final.text[:300]
        assert app.requests[-1].target == "/back"
        assert midway.follow(f"{APP}/retry").status_code == 200
        assert signed_in.get(f"{APP}/after").status_code == 200
    finally:
        assert gh.stop() == 0, gh.stderr_text()
