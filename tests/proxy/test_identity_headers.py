"""Client-sent identity headers never reach an upstream (bytes-level, no sockets)."""

from __future__ import annotations

import pytest

from gatehouse.config import load_text
from gatehouse.proxy.headers import upstream_request_head
from gatehouse.proxy.router import compile_route

SPOOFED = [
    (b"host", b"app.example.com"),
    (b"x-pomerium-jwt-assertion", b"client-token"),
    (b"x-pomerium-jwt-assertion", b"second"),
    (b"x-pomerium-jwt-assertion-for", b"forged-chain"),
    (b"x-pomerium-jwt-assertion-anything", b"x"),
    (b"x-pomerium-claim-email", b"ceo@example.com"),
    (b"X-Pomerium-Claim-Groups".lower(), b"admins"),
    (b"accept", b"*/*"),
]


def _route(pass_identity: bool):
    loaded = load_text(
        f"""
insecure_server: true
routes:
  - from: http://app.example.com
    to: http://127.0.0.1:9
    pass_identity_headers: {str(pass_identity).lower()}
""",
        env={},
    )
    return compile_route(loaded.options, loaded.options.routes[0], 0)


def _headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode().split("\r\n")[1:]
    return [tuple(x.strip() for x in line.split(":", 1)) for line in lines if line]  # type: ignore[misc]


@pytest.mark.parametrize("pass_identity", [True, False])
def test_spoofed_identity_headers_are_stripped(pass_identity: bool) -> None:
    ours = [(b"x-pomerium-jwt-assertion", b"gatehouse-token")] if pass_identity else None
    head = upstream_request_head(
        method=b"GET",
        target=b"/",
        headers=list(SPOOFED),
        connection=None,
        route=_route(pass_identity),
        host_header=b"127.0.0.1:9",
        original_host=b"app.example.com",
        client_ip="10.0.0.1",
        scheme="https",
        body_framing=None,
        upgrade=None,
        identity_headers=ours,
    )
    got = _headers(head)
    names = [k for k, _ in got]
    assert not any(k.startswith("x-pomerium-claim-") for k in names)
    assertions = [v for k, v in got if k == "x-pomerium-jwt-assertion"]
    chained = [v for k, v in got if k == "x-pomerium-jwt-assertion-for"]
    assert not any(
        k.startswith("x-pomerium-jwt-assertion-") and k != "x-pomerium-jwt-assertion-for"
        for k in names
    )
    if pass_identity:
        assert assertions == ["gatehouse-token"]
        assert chained == ["client-token"]
    else:
        assert assertions == []
        assert chained == []
    assert ("accept", "*/*") in got


def _bearer_route(route_format: str | None, global_format: str = "default"):
    line = f"    bearer_token_format: {route_format}\n" if route_format else ""
    loaded = load_text(
        f"insecure_server: true\nbearer_token_format: {global_format}\nroutes:\n"
        f"  - from: http://app.example.com\n    to: http://127.0.0.1:9\n{line}",
        env={},
    )
    return compile_route(loaded.options, loaded.options.routes[0], 0)


def _authorization_sent(route, value: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    head = upstream_request_head(
        method=b"GET",
        target=b"/",
        headers=[(b"authorization", value)],
        connection=None,
        route=route,
        host_header=b"127.0.0.1:9",
        original_host=b"app.example.com",
        client_ip="10.0.0.1",
        scheme="https",
        body_framing=None,
        upgrade=None,
        identity_headers=None,
    )
    return [v for k, v in _headers(head) if k == "authorization"]


@pytest.mark.parametrize(
    ("route_format", "global_format", "stripped"),
    [
        ("idp_identity_token", "default", True),
        ("idp_access_token", "default", True),
        (None, "idp_identity_token", True),  # the global format applies
        ("default", "idp_access_token", False),  # the route's wins
        (None, "default", False),
    ],
)
def test_bearer_token_stays_behind_on_idp_token_routes(
    route_format: str | None, global_format: str, stripped: bool
) -> None:
    route = _bearer_route(route_format, global_format)
    for value in (b"Bearer eyJ.a.b", b"bearer eyJ.a.b", b"  BEARER   x"):
        assert _authorization_sent(route, value) == ([] if stripped else [value.decode().strip()])
    # Another scheme is not gatehouse's credential: it always passes.
    assert _authorization_sent(route, b"Basic YTpi") == ["Basic YTpi"]
    # gatehouse's own programmatic token never does.
    assert _authorization_sent(route, b"Bearer Pomerium-abc") == []
