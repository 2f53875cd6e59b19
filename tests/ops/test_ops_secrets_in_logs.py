"""No secret ever reaches gatehouse's logs (stdout access log + stderr process log).

A full sign-in through panva's oidc-provider (authorization code, hand-off to the route
host), a programmatic login (``pomerium_jwt``), an API call with it, and a sign-out are
run with ``log_level: debug``; then every line gatehouse wrote is searched for each
secret seen on the way: the session cookies, the hand-off URL's token, the IdP's
authorization code and ID token (the ID token comes back in the sign-out redirect as
``id_token_hint``), the programmatic token, the assertion JWT, the client secret and the
shared and cookie secrets.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from ops_helpers import csrf_of

from authenticate.conftest import CLIENT_SECRET
from e2e.conftest import sso_config
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

pytestmark = pytest.mark.e2e

APP = "http://app.localhost"


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_a_full_sign_in_and_sign_out_log_no_secret(  # type: ignore[no-untyped-def]
    idp, tmp_path: Path, make_upstream: Callable[..., Upstream]
) -> None:
    app = make_upstream("app")
    routes = [
        {
            "from": APP,
            "to": app.url,
            "pass_identity_headers": True,
            "policy": [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}],
        }
    ]
    config = sso_config(idp, routes, log_level="debug")
    gh = GatehouseProcess(config, tmp_path).start()
    secrets: dict[str, str] = {
        "client secret": CLIENT_SECRET,
        "shared secret": config["shared_secret"],
        "cookie secret": config["cookie_secret"],
        # The same keys as they would look hex-encoded or decoded to text-ish bytes.
        "cookie secret (hex)": base64.b64decode(config["cookie_secret"]).hex(),
        "shared secret (hex)": base64.b64decode(config["shared_secret"]).hex(),
    }
    try:
        browser = Browser(gh.port)
        seen: list[str] = []
        final = browser.follow(f"{APP}/page", stop=lambda u: seen.append(u) or False)
        assert final.status_code == 200
        callback = next(u for u in seen if "/oauth2/callback" in u)
        secrets["authorization code"] = _query(callback)["code"][0]
        handoff = next(u for u in seen if "/.pomerium/callback/" in u)
        for name, values in _query(handoff).items():
            if name.startswith("pomerium_") and name != "pomerium_redirect_uri":
                secrets[f"hand-off {name}"] = values[0]
        for host, jar in browser.cookies.items():
            for name, value in jar.items():
                if len(value) >= 16:
                    secrets[f"cookie {name} on {host}"] = value
        assertion = app.requests[-1].header("x-pomerium-jwt-assertion")
        assert assertion
        secrets["assertion JWT"] = assertion
        secrets["assertion signature"] = assertion.rsplit(".", 1)[1]

        # Programmatic login: the token handed to a CLI on loopback, then used as a bearer.
        r = browser.get(
            f"{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:9999/cb"
        )
        assert r.status_code == 200
        end = browser.follow(r.text, stop=lambda u: u.startswith("http://127.0.0.1:9999/"))
        token = _query(end.headers["location"])["pomerium_jwt"][0]
        secrets["pomerium_jwt"] = token
        api = httpx.get(
            f"http://127.0.0.1:{gh.port}/data",
            headers={"Host": "app.localhost", "Authorization": f"Pomerium {token}"},
        )
        assert api.status_code == 200
        secrets["assertion JWT (programmatic)"] = (
            app.requests[-1].header("x-pomerium-jwt-assertion") or "-" * 40
        )
        # A bad bearer token is logged as a failure, never echoed.
        bogus = token[:-8] + "AAAAAAAA"
        httpx.get(
            f"http://127.0.0.1:{gh.port}/data",
            headers={"Host": "app.localhost", "Authorization": f"Pomerium {bogus}"},
        )
        secrets["tampered pomerium_jwt"] = bogus

        page = browser.get(f"{APP}/.pomerium/")
        secrets["csrf token"] = csrf_of(page.text)
        out = browser.request(
            "POST", f"{APP}/.pomerium/sign_out", data={"csrf": secrets["csrf token"]}
        )
        assert out.status_code == 303
        id_token = _query(out.headers["location"]).get("id_token_hint", [""])[0]
        assert id_token, "the sign-out redirect carries the IdP's ID token"
        secrets["IdP id_token"] = id_token
        secrets["IdP id_token signature"] = id_token.rsplit(".", 1)[1]
        # Replay of a dead cookie, logged as a failure.
        httpx.get(
            f"http://127.0.0.1:{gh.port}/",
            headers={
                "Host": "app.localhost",
                "Cookie": f"_gatehouse={secrets['cookie _gatehouse on app.localhost']}",
            },
        )
    finally:
        assert gh.stop() == 0, gh.stderr_text()

    logs = "\n".join(gh.stdout_lines + gh.stderr_lines)
    assert len(gh.stdout_lines) >= 8 and len(gh.stderr_lines) >= 3  # the logs really were written
    leaked = sorted(name for name, value in secrets.items() if value and value in logs)
    assert leaked == [], f"secrets in gatehouse's logs: {leaked}"
    assert {
        "authorization code",
        "hand-off pomerium_handoff",
        "pomerium_jwt",
        "IdP id_token",
    } <= set(secrets)
