"""The routes portal (``/.pomerium/routes``, ``/.pomerium/api/v1/routes``) through a real
gatehouse signed in at an OpenID provider: it lists exactly the routes the user's policy
opens, with Pomerium's JSON fields, and shows nothing before sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from security.conftest import ALICE, sso_config
from security.idp import HostileIdp
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Upstream

BOB = {"or": [{"email": {"is": "bob@example.com"}}]}


def _routes(up: Upstream) -> list[dict[str, Any]]:
    return [
        {
            "from": "http://app.localhost",
            "to": up.url,
            "name": "App",
            "id": "app-route",
            "description": "The <b>main</b> app",
            "logo_url": "https://logos.example/app.png",
            "policy": [{"allow": ALICE}],
        },
        {"from": "http://bob.localhost", "to": up.url, "policy": [{"allow": BOB}]},
        {"from": "http://pub.localhost", "to": up.url, "allow_public_unauthenticated_access": True},
        # Pomerium's portal ignores deny rules and would list this one.
        {
            "from": "http://closed.localhost",
            "to": up.url,
            "allow_any_authenticated_user": True,
            "policy": [{"deny": ALICE}],
        },
        # Two "and" criteria: Pomerium's portal skips the rule and would not list it.
        {
            "from": "http://both.localhost",
            "to": up.url,
            "policy": [
                {
                    "allow": {
                        "and": [
                            {"email": {"is": "alice@example.com"}},
                            {"groups": {"has": "staff"}},
                        ]
                    }
                }
            ],
        },
        {
            "from": "http://admin.localhost",
            "to": up.url,
            "prefix": "/admin",
            "name": "Admin <script>",
            "logo_url": "javascript:alert(1)",
            "policy": [
                {
                    "allow": {
                        "and": [
                            {"email": {"is": "alice@example.com"}},
                            {"http_path": {"starts_with": "/admin"}},
                        ]
                    }
                },
            ],
        },
    ]


@pytest.fixture(scope="module")
def gh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatehouseProcess]:
    loop = LoopThread()
    idp = HostileIdp().start()
    up = Upstream(loop, "app")
    config = sso_config(idp, _routes(up))
    with GatehouseProcess(config, tmp_path_factory.mktemp("portal")) as proc:
        yield proc


@pytest.fixture(scope="module")
def alice(gh: GatehouseProcess) -> Browser:
    browser = Browser(gh.port)
    assert browser.follow("http://app.localhost/").status_code == 200
    return browser


def test_api_lists_exactly_the_reachable_routes(gh: GatehouseProcess, alice: Browser) -> None:
    response = alice.get("http://app.localhost/.pomerium/api/v1/routes")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    routes = response.json()["routes"]
    assert [r["from"] for r in routes] == [
        "http://app.localhost",
        "http://pub.localhost",
        "http://both.localhost",
        "http://admin.localhost",
    ]
    app = routes[0]
    assert app == {
        "id": "app-route",
        "name": "App",
        "type": "http",
        "from": "http://app.localhost",
        "description": "The <b>main</b> app",
        "logo_url": "https://logos.example/app.png",
    }
    assert routes[1]["name"] == "pub.localhost"  # no name: the host, as a name
    assert len({r["id"] for r in routes}) == len(routes)


def test_page_shows_the_routes_escaped(gh: GatehouseProcess, alice: Browser) -> None:
    response = alice.get("http://app.localhost/.pomerium/routes")
    assert response.status_code == 200
    html = response.text
    assert 'href="http://app.localhost"' in html
    assert "The &lt;b&gt;main&lt;/b&gt; app" in html
    assert "Admin &lt;script&gt;" in html and "<script>" not in html
    assert 'src="https://logos.example/app.png"' in html
    assert "javascript:" not in html
    assert "bob.localhost" not in html and "closed.localhost" not in html


def test_every_route_host_serves_it(gh: GatehouseProcess, alice: Browser) -> None:
    assert alice.follow("http://pub.localhost/.pomerium/api/v1/routes").status_code == 200


def test_without_a_session_nothing_is_listed(gh: GatehouseProcess) -> None:
    api = httpx.get(
        f"http://127.0.0.1:{gh.port}/.pomerium/api/v1/routes",
        headers={"Host": "app.localhost", "Accept": "application/json"},
    )
    assert api.status_code == 401
    assert "app.localhost" not in api.text
    page = Browser(gh.port).get("http://app.localhost/.pomerium/routes")
    assert page.status_code == 302
    assert "/.pomerium/sign_in" in page.headers["location"]


def test_a_forged_cookie_lists_nothing(gh: GatehouseProcess) -> None:
    api = httpx.get(
        f"http://127.0.0.1:{gh.port}/.pomerium/api/v1/routes",
        headers={"Host": "app.localhost", "Cookie": "_gatehouse=forged", "Accept": "*/*"},
    )
    assert api.status_code == 401
