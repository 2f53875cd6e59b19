"""A plain-HTTP route with an explicit port keeps its scheme (hardening issue 12, item 9).

``from: http://app.localhost:8080``: the scheme gatehouse's own pages use for that host
was looked up without the port, found no route and guessed ``https``, so cookies got
``Secure`` (dropped by browsers on plain HTTP: a sign-in loop) and the URLs built from
the request pointed at https. Clients here address the route as ``app.localhost:8080``
(as behind a port forward) while gatehouse listens on a port of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

APP = "http://app.localhost:8080"


def test_route_with_a_port_gets_plain_http_cookies_and_urls(
    start_sso: Callable[..., GatehouseProcess], app_upstream: Upstream
) -> None:
    gh = start_sso([{"from": APP, "to": app_upstream.url, "allow_any_authenticated_user": True}])
    browser = Browser(gh.port)
    # gatehouse's own user page builds its sign-in redirect from the request's scheme.
    first = browser.get(f"{APP}/.pomerium/")
    assert first.status_code == 302
    sign_in = parse_qs(urlsplit(first.headers["location"]).query)
    assert sign_in["pomerium_redirect_uri"] == [f"{APP}/.pomerium/"]
    binding = first.headers["set-cookie"]
    assert binding.startswith("_gatehouse_binding=") and "Secure" not in binding
    final = browser.follow(f"{APP}/.pomerium/")
    assert final.status_code == 200 and browser.last_url == f"{APP}/.pomerium/"
    callback = next(h for h in browser.history if "/.pomerium/callback/" in h.url)
    assert callback.url.startswith(f"{APP}/.pomerium/callback/?")
    session = callback.response.headers["set-cookie"]
    assert session.startswith("_gatehouse=") and "Secure" not in session
    # Signed sign-out links are checked against the URL as the browser addressed it.
    csrf = final.text.split('name="csrf" value="')[1].split('"')[0]
    out = browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
    assert out.status_code == 303
    cleared = out.headers["set-cookie"]
    assert cleared.startswith("_gatehouse=;") and "Secure" not in cleared
