"""No spelling of an identity header reaches an upstream (issue 12, item 4).

CGI, WSGI, PHP and Rack turn ``X_Pomerium_Claim_Email`` and ``X-Pomerium-Claim-Email`` into
the same variable (``HTTP_X_POMERIUM_CLAIM_EMAIL``), so an upstream reading that variable
would take a client's underscore spelling for gatehouse's header. The attack: send every
spelling of the assertion, claim and ``jwt_claims_headers`` headers (and ``X-Forwarded-*``)
and look at what the upstream received. ``headers_with_underscores_action`` (Envoy's
option) drops or refuses every underscore name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.loop import LoopThread
from support.upstream import Upstream

from .hardening import ALICE, gatehouse, signed_in

SPOOFED = [
    ("X_Pomerium_Jwt_Assertion", "forged.jwt.token"),
    ("X_Pomerium_Claim_Email", "ceo@example.com"),
    ("x-pomerium_claim-email", "ceo@example.com"),
    ("X-Pomerium-Claim_Groups", "admins"),
    ("X_POMERIUM_JWT_ASSERTION_FOR", "forged-chain"),
    ("X-Email", "ceo@example.com"),
    ("X_Email", "ceo@example.com"),
    ("x_forwarded_for", "10.9.9.9"),
    ("X_Forwarded_Host", "admin.internal"),
    ("X_Pomerium_Anything", "x"),
]
IDENTITY = {"pass_identity_headers": True}
CLAIMS = {"jwt_claims_headers": {"X-Email": "email", "X-Pomerium-Claim-Groups": "groups"}}


def _variable(name: str) -> str:
    """The CGI/WSGI variable an upstream framework reads the header as."""
    return "HTTP_" + name.upper().replace("-", "_")


@pytest.fixture(scope="module")
def app(loop_thread: LoopThread) -> Iterator[Upstream]:
    up = Upstream(loop_thread, "app")
    yield up
    up.close()


@pytest.fixture(scope="module")
def port(app: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    routes = [
        {"from": "http://app.localhost", "to": app.url, "policy": ALICE, **IDENTITY},
        {
            "from": "http://pub.localhost",
            "to": app.url,
            "allow_public_unauthenticated_access": True,
            **IDENTITY,
        },
    ]
    with gatehouse(tmp_path_factory.mktemp("spelling"), routes, **CLAIMS) as (gh, _):
        yield gh.port


def _get(port: int, host: str, headers: list[tuple[str, str]]) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/", headers=[("Host", host), *headers], timeout=5)


def test_no_spelling_of_an_identity_header_passes(port: int, app: Upstream) -> None:
    app.reset()
    r = _get(port, "pub.localhost", [*SPOOFED, ("X_Custom", "kept")])
    assert r.status_code == 200
    seen = app.requests[-1]
    variables = {_variable(name) for name, _ in seen.headers}
    for name, _ in SPOOFED:
        assert _variable(name) not in variables or name.lower().startswith("x_forwarded")
    assert seen.header_all("x-forwarded-for") == ["127.0.0.1"]
    assert seen.header_all("x-forwarded-host") == ["pub.localhost"]
    raw = seen.raw_head.decode("latin-1")
    assert "ceo@example.com" not in raw and "forged" not in raw and "admins" not in raw
    assert seen.header("X_Custom") == "kept", "other underscore names pass by default"


def test_signed_in_upstream_sees_only_gatehouses_values(port: int, app: Upstream) -> None:
    browser = signed_in(port, "http://app.localhost/")
    app.reset()
    r = browser.request("GET", "http://app.localhost/", headers=dict(SPOOFED))
    assert r.status_code == 200
    seen = app.requests[-1]
    by_variable: dict[str, list[str]] = {}
    for name, value in seen.headers:
        by_variable.setdefault(_variable(name), []).append(value)
    assert by_variable["HTTP_X_EMAIL"] == ["alice@example.com"]
    assert by_variable["HTTP_X_POMERIUM_CLAIM_GROUPS"] == ["staff"]
    assert len(by_variable["HTTP_X_POMERIUM_JWT_ASSERTION"]) == 1
    assert "HTTP_X_POMERIUM_CLAIM_EMAIL" not in by_variable
    assert "HTTP_X_POMERIUM_JWT_ASSERTION_FOR" not in by_variable


@pytest.mark.parametrize(("action", "status"), [("REJECT_REQUEST", 400), ("DROP_HEADER", 200)])
def test_headers_with_underscores_action(
    app: Upstream, tmp_path: Path, action: str, status: int
) -> None:
    routes = [
        {"from": "http://pub.localhost", "to": app.url, "allow_public_unauthenticated_access": True}
    ]
    with gatehouse(tmp_path, routes, headers_with_underscores_action=action) as (gh, _):
        app.reset()
        assert _get(gh.port, "pub.localhost", [("X_Custom", "v")]).status_code == status
        assert _get(gh.port, "pub.localhost", [("X-Custom", "v")]).status_code == 200
    assert [r.header("x-custom") for r in app.requests] == (
        ["v"] if action == "REJECT_REQUEST" else [None, "v"]
    )
    assert all(r.header("X_Custom") is None for r in app.requests)
