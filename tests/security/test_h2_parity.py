"""The red-team cases that matter most, over HTTP/2 (h2c) against the same shared stack.

HTTP/2 carries the request target in ``:path`` and the host in ``:authority``, and its
headers arrive HPACK-decoded; none of that may change what the upstream sees. The same
targets and forged headers as :mod:`.test_path_bypass` and :mod:`.test_spoofing` are sent
with the ``h2`` test client (:mod:`support.h2client`, outbound checks off so every
spelling goes out as written), and the same properties are asserted. HTTP/2 adds its own
rule: connection-specific fields and a ``Host`` naming another authority make the request
malformed (RFC 9113 §8.2.2, §8.3.1), so it is refused before any route sees it.
"""

from __future__ import annotations

import h2.exceptions
import pytest

from support.browser import Browser
from support.h2client import H2Client
from support.upstream import RecordedRequest

from .conftest import Stack, cookie_of, verify_assertion
from .test_path_bypass import TARGETS, _allowed, readings
from .test_spoofing import FORGED, IDENTITY_SPOOFS


def h2_send(
    stack: Stack,
    host: str,
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    cookie: str | None = None,
) -> tuple[int | None, RecordedRequest | None]:
    """One request over h2c; (status or ``None`` if the connection refused it, what the
    app upstream received)."""
    hdrs = list(headers or [])
    if cookie is not None:
        hdrs.append(("cookie", f"_gatehouse={cookie}"))
    with H2Client(stack.port, authority=host, validate=False, outbound_checks=False) as client:
        try:
            result = client.response(client.request(path, headers=hdrs), 10)
        except h2.exceptions.ProtocolError:
            result = None
        status = result.status if result is not None and result.status else None
    return status, (stack.app.requests[-1] if stack.app.requests else None)


@pytest.mark.parametrize("target", TARGETS)
def test_h2_no_spelling_reaches_a_forbidden_path(fresh: Stack, target: str) -> None:
    status, seen = h2_send(fresh, "only.localhost", target)
    if status is None or status >= 300:
        assert status is None or status < 500, (target, status)
        assert fresh.app.requests == [], (target, [r.target for r in fresh.app.requests])
        return
    assert status == 200
    assert seen is not None and _allowed(seen.path), (target, seen and seen.target)
    escapes = {p for p in readings(seen.path) if not _allowed(p)}
    assert not escapes, (target, seen.target, escapes)


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/public/a/b?x=1", "/public/a/b?x=1"),
        ("/public/%61", "/public/a"),
        ("/public/./a/../b", "/public/b"),
        ("/public//a", "/public/a"),
        ("/public/%3a", "/public/%3A"),
        ("/public/%252e%252e/admin", "/public/%252e%252e/admin"),
    ],
)
def test_h2_paths_are_forwarded_in_their_normalised_form(
    fresh: Stack, target: str, forwarded: str
) -> None:
    status, _ = h2_send(fresh, "only.localhost", target)
    assert status == 200
    assert [r.target for r in fresh.app.requests] == [forwarded]


@pytest.mark.parametrize("target", ["/admin", "/", "/.pomerium/../admin"])
def test_h2_forbidden_paths_are_denied(fresh: Stack, target: str) -> None:
    status, _ = h2_send(fresh, "only.localhost", target)
    assert status in (302, 401, 403)
    assert fresh.app.requests == []


@pytest.mark.parametrize(("name", "value"), IDENTITY_SPOOFS, ids=[n for n, _ in IDENTITY_SPOOFS])
def test_h2_client_identity_headers_never_reach_a_public_route(
    fresh: Stack, name: str, value: str
) -> None:
    status, seen = h2_send(fresh, "pub.localhost", headers=[(name, value)])
    assert status == 200 and seen is not None
    assert not any(k.lower().startswith("x-pomerium-") for k, _ in seen.headers), seen.headers
    assert value.encode() not in seen.raw_head


@pytest.mark.parametrize(("name", "value"), IDENTITY_SPOOFS, ids=[n for n, _ in IDENTITY_SPOOFS])
def test_h2_client_identity_headers_are_replaced_on_an_identity_route(
    fresh: Stack, alice: Browser, name: str, value: str
) -> None:
    status, seen = h2_send(fresh, "app.localhost", headers=[(name, value)], cookie=cookie_of(alice))
    assert status == 200 and seen is not None
    assert seen.header_all("x-pomerium-claim-email") == ["alice@example.com"]
    assert "x-pomerium-claim-groups" not in seen.header_names()
    [assertion] = seen.header_all("x-pomerium-jwt-assertion")
    assert verify_assertion(fresh.port, assertion)["email"] == "alice@example.com"
    carried = seen.header_all("x-pomerium-jwt-assertion-for")
    assert carried == ([FORGED] if name.lower() == "x-pomerium-jwt-assertion" else [])
    assert b"_gatehouse=" not in seen.raw_head  # the session cookie stays behind


@pytest.mark.parametrize(
    "name", ["X_Pomerium_Claim_Email", "X_Pomerium_Jwt_Assertion", "x-pomerium_claim-email"]
)
def test_h2_underscore_spellings_never_reach_the_upstream(
    fresh: Stack, alice: Browser, name: str
) -> None:
    _, seen = h2_send(
        fresh, "app.localhost", headers=[(name, "admin@example.com")], cookie=cookie_of(alice)
    )
    assert seen is not None
    assert b"admin@example.com" not in seen.raw_head


def test_h2_forwarded_headers_are_gatehouses(fresh: Stack) -> None:
    status, seen = h2_send(
        fresh,
        "pub.localhost",
        headers=[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-host", "admin.internal"),
            ("x-forwarded-proto", "https"),
        ],
    )
    assert status == 200 and seen is not None
    assert seen.header_all("x-forwarded-for") == ["10.9.9.9, 127.0.0.1"]
    assert seen.header_all("x-forwarded-host") == ["pub.localhost"]
    assert seen.header_all("x-forwarded-proto") == ["http"]
    assert seen.header_all("host") == [f"127.0.0.1:{fresh.app.port}"]


@pytest.mark.parametrize(
    "headers",
    [
        [("host", "only.localhost")],  # another authority than :authority
        [("connection", "x-pomerium-jwt-assertion")],
        [("transfer-encoding", "chunked")],
        [("upgrade", "websocket")],
        [("te", "gzip")],
        [("keep-alive", "timeout=5")],
    ],
    ids=["host", "connection", "transfer-encoding", "upgrade", "te", "keep-alive"],
)
def test_h2_malformed_requests_never_reach_a_route(
    fresh: Stack, headers: list[tuple[str, str]]
) -> None:
    status, seen = h2_send(fresh, "pub.localhost", headers=headers)
    assert status is None or 400 <= status < 500
    assert seen is None
