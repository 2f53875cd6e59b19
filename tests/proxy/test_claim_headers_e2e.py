"""``jwt_claims_headers`` through a real gatehouse signed in at an OpenID provider: a claim
the user lacks arrives as an empty header (as Pomerium sends it), never as what the client
sent under that name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from security.conftest import ALICE, sso_config
from security.idp import HostileIdp
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Upstream


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatehouseProcess, Upstream]]:
    loop = LoopThread()
    idp = HostileIdp().start()
    up = Upstream(loop, "app")
    config = sso_config(
        idp,
        [
            {
                "from": "http://app.localhost",
                "to": up.url,
                "policy": [{"allow": ALICE}],
                "pass_identity_headers": True,
            }
        ],
        jwt_claims_headers={
            "X-Pomerium-Claim-Email": "email",
            "X-Pomerium-Claim-Department": "department",
        },
    )
    with GatehouseProcess(config, tmp_path_factory.mktemp("claims")) as proc:
        yield proc, up


def test_missing_claim_is_an_empty_header(stack: tuple[GatehouseProcess, Upstream]) -> None:
    gh, up = stack
    browser = Browser(gh.port)
    assert browser.follow("http://app.localhost/").status_code == 200
    up.reset()
    response = browser.get(
        "http://app.localhost/x", headers={"X-Pomerium-Claim-Department": "forged-by-client"}
    )
    assert response.status_code == 200
    [seen] = up.requests
    assert seen.header_all("x-pomerium-claim-email") == ["alice@example.com"]
    assert seen.header_all("x-pomerium-claim-department") == [""]
    assert b"forged-by-client" not in seen.raw_head


def test_user_json_is_the_assertion_payload(stack: tuple[GatehouseProcess, Upstream]) -> None:
    """``/.pomerium/user`` is what Pomerium serves: the assertion's claims without iss, aud,
    exp, iat and jti; the IdP's other claims (``groups`` from the token aside) stay out."""
    gh, _ = stack
    browser = Browser(gh.port)
    assert browser.follow("http://app.localhost/").status_code == 200
    user = browser.get(
        "http://app.localhost/.pomerium/user", headers={"Accept": "application/json"}
    )
    assert user.status_code == 200
    body = user.json()
    assert set(body) == {"sub", "user", "email", "name", "groups", "sid"}
    assert body["email"] == "alice@example.com" and body["sub"] == "alice-sub"
    assert body["groups"] == ["staff"]
