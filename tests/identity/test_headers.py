"""Client-sent identity headers never reach an upstream."""

from __future__ import annotations

import pytest

from gatehouse.identity.headers import is_identity_header, scrub_identity_headers

SPOOFED = [
    (b"host", b"app"),
    (b"x-pomerium-jwt-assertion", b"client-token"),
    (b"x-pomerium-jwt-assertion", b"second"),
    (b"x-pomerium-jwt-assertion-for", b"forged-chain"),
    (b"x-pomerium-jwt-assertion-anything", b"x"),
    (b"x-pomerium-claim-email", b"ceo@example.com"),
    (b"x-pomerium-claim-groups", b"admins"),
    (b"accept", b"*/*"),
]


@pytest.mark.parametrize("pass_identity", [True, False])
def test_spoofed_headers_removed(pass_identity: bool) -> None:
    out = scrub_identity_headers(list(SPOOFED), pass_identity_headers=pass_identity)
    names = [k for k, _ in out]
    assert not any(k.startswith(b"x-pomerium-claim-") for k in names)
    assert b"x-pomerium-jwt-assertion" not in names
    kept = [(k, v) for k, v in out if k not in (b"x-pomerium-jwt-assertion-for",)]
    assert kept == [(b"host", b"app"), (b"accept", b"*/*")]
    if pass_identity:
        assert [v for k, v in out if k == b"x-pomerium-jwt-assertion-for"] == [b"client-token"]
    else:
        assert b"x-pomerium-jwt-assertion-for" not in names


def test_nothing_to_scrub_returns_input() -> None:
    headers = [(b"host", b"a"), (b"x-pomerium-other", b"b")]
    assert scrub_identity_headers(headers, pass_identity_headers=True) is headers


def test_forged_assertion_for_alone_is_dropped() -> None:
    out = scrub_identity_headers(
        [(b"x-pomerium-jwt-assertion-for", b"x")], pass_identity_headers=True
    )
    assert out == []


def test_is_identity_header() -> None:
    assert is_identity_header(b"x-pomerium-claim-x")
    assert is_identity_header(b"x-pomerium-jwt-assertion")
    assert not is_identity_header(b"x-pomerium-routing-key")
