"""Header spoofing: a client sending the headers an upstream trusts.

An upstream behind gatehouse believes ``X-Pomerium-Jwt-Assertion`` and
``X-Pomerium-Claim-*`` (who the user is) and often ``X-Forwarded-*`` (where the request
came from). Each case sends forged values over a raw socket and asserts what the
upstream received: gatehouse's own values, or nothing, never the client's.
"""

from __future__ import annotations

import pytest

from support.browser import Browser
from support.client import RawResponse
from support.upstream import RecordedRequest

from .conftest import Stack, cookie_of, raw, verify_assertion

FORGED = "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImFkbWluQGV4YW1wbGUuY29tIn0."


def send(
    stack: Stack,
    host: str,
    headers: list[tuple[str, str]],
    *,
    cookie: str | None = None,
    connection: str = "close",
    path: str = "/",
) -> tuple[RawResponse, RecordedRequest | None]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Connection: {connection}"]
    if cookie is not None:
        lines.append(f"Cookie: _gatehouse={cookie}")
    lines += [f"{k}: {v}" for k, v in headers]
    response, out = raw(stack.port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    assert response is not None, out
    return response, (stack.app.requests[-1] if stack.app.requests else None)


IDENTITY_SPOOFS = [
    ("X-Pomerium-Jwt-Assertion", FORGED),
    ("x-pomerium-jwt-assertion", FORGED),
    ("X-POMERIUM-JWT-ASSERTION", FORGED),
    ("X-Pomerium-Claim-Email", "admin@example.com"),
    ("x-pomerium-claim-groups", "admins"),
    ("X-Pomerium-Claim-Anything-New", "admin"),
    ("X-Pomerium-Jwt-Assertion-For", FORGED),
]


@pytest.mark.parametrize(("name", "value"), IDENTITY_SPOOFS, ids=[n for n, _ in IDENTITY_SPOOFS])
def test_client_identity_headers_never_reach_a_public_route(
    fresh: Stack, name: str, value: str
) -> None:
    response, seen = send(fresh, "pub.localhost", [(name, value)])
    assert response.status == 200 and seen is not None
    assert not any(k.lower().startswith("x-pomerium-") for k, _ in seen.headers), seen.headers
    assert value.encode() not in seen.raw_head


@pytest.mark.parametrize(("name", "value"), IDENTITY_SPOOFS, ids=[n for n, _ in IDENTITY_SPOOFS])
def test_client_identity_headers_are_replaced_on_an_identity_route(
    fresh: Stack, alice: Browser, name: str, value: str
) -> None:
    """Only gatehouse's assertion and claims arrive. Debatable, as Pomerium: the client's
    own ``X-Pomerium-Jwt-Assertion`` is passed on as ``X-Pomerium-Jwt-Assertion-For``
    (a service calling another through gatehouse names its caller); it is never trusted
    as the identity and an upstream must not treat it as one."""
    response, seen = send(fresh, "app.localhost", [(name, value)], cookie=cookie_of(alice))
    assert response.status == 200 and seen is not None
    assert seen.header_all("x-pomerium-claim-email") == ["alice@example.com"]
    assert "x-pomerium-claim-groups" not in seen.header_names()
    assert "x-pomerium-claim-anything-new" not in seen.header_names()
    [assertion] = seen.header_all("x-pomerium-jwt-assertion")
    assert verify_assertion(fresh.port, assertion)["email"] == "alice@example.com"
    carried = seen.header_all("x-pomerium-jwt-assertion-for")
    if name.lower() == "x-pomerium-jwt-assertion":
        assert carried == [FORGED]
    else:
        assert carried == []


def test_duplicate_and_mixed_case_identity_headers_are_all_dropped(fresh: Stack) -> None:
    headers = [
        ("X-Pomerium-Claim-Email", "a@evil"),
        ("x-pomerium-claim-email", "b@evil"),
        ("X-pOmErIuM-cLaIm-EmAiL", "c@evil"),
    ]
    _, seen = send(fresh, "pub.localhost", headers)
    assert seen is not None
    assert b"@evil" not in seen.raw_head


@pytest.mark.parametrize(
    "tokens",
    [
        "x-pomerium-jwt-assertion",
        "X-Pomerium-Claim-Email",
        "x-forwarded-for, x-forwarded-proto, x-forwarded-host",
        "host",
        "cookie",
    ],
)
def test_connection_naming_identity_headers_cannot_remove_gatehouses_own(
    fresh: Stack, alice: Browser, tokens: str
) -> None:
    """Hop-by-hop by ``Connection`` applies to the client's headers only: naming
    gatehouse's identity or forwarding headers there does not strip what gatehouse adds."""
    response, seen = send(
        fresh, "app.localhost", [], cookie=cookie_of(alice), connection=f"close, {tokens}"
    )
    assert response.status == 200 and seen is not None
    [assertion] = seen.header_all("x-pomerium-jwt-assertion")
    assert verify_assertion(fresh.port, assertion)["email"] == "alice@example.com"
    assert seen.header_all("x-pomerium-claim-email") == ["alice@example.com"]
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == "app.localhost"
    assert seen.header("host")


def test_connection_named_client_header_is_dropped(fresh: Stack) -> None:
    """RFC 9110 §7.6.1: a header the client lists in ``Connection`` is hop-by-hop."""
    _, seen = send(
        fresh, "pub.localhost", [("X-Secret-Hop", "1")], connection="close, x-secret-hop"
    )
    assert seen is not None and "x-secret-hop" not in seen.header_names()


def test_x_forwarded_for_is_appended_to_never_replaced_by_the_client(fresh: Stack) -> None:
    """Debatable, as Envoy/Pomerium: a client's ``X-Forwarded-For`` is kept and the real
    peer appended, so the last entry is the only one gatehouse vouches for; an upstream
    must read the right-most address, never the first."""
    _, seen = send(fresh, "pub.localhost", [("X-Forwarded-For", "10.9.9.9")])
    assert seen is not None
    assert seen.header_all("x-forwarded-for") == ["10.9.9.9, 127.0.0.1"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("X-Forwarded-Host", "admin.internal", "pub.localhost"),
        ("X-Forwarded-Proto", "https", "http"),
        ("x-forwarded-host", "evil.example", "pub.localhost"),
    ],
)
def test_x_forwarded_host_and_proto_are_gatehouses(
    fresh: Stack, name: str, value: str, expected: str
) -> None:
    _, seen = send(fresh, "pub.localhost", [(name, value), (name, value)])
    assert seen is not None
    assert seen.header_all(name) == [expected]


def test_host_is_never_the_clients_for_a_rewritten_route(fresh: Stack) -> None:
    """Without ``preserve_host_header`` the upstream gets its own address as Host."""
    _, seen = send(fresh, "pub.localhost", [])
    assert seen is not None
    assert seen.header_all("host") == [f"127.0.0.1:{fresh.app.port}"]


@pytest.mark.parametrize(
    "name", ["X_Pomerium_Claim_Email", "X_Pomerium_Jwt_Assertion", "x-pomerium_claim-email"]
)
def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(
    fresh: Stack, alice: Browser, name: str
) -> None:
    """Servers that map header names to variables (CGI, WSGI, PHP, some Node stacks)
    read ``X_Pomerium_Claim_Email`` as ``X-Pomerium-Claim-Email``."""
    _, seen = send(fresh, "app.localhost", [(name, "admin@example.com")], cookie=cookie_of(alice))
    assert seen is not None
    assert b"admin@example.com" not in seen.raw_head
