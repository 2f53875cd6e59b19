"""Request header rules of HTTP/2 (RFC 9113 §8.2, §8.3), checked by
:mod:`gatehouse.http.h2.fields` in place of the ``h2`` library's validation."""

from __future__ import annotations

import pytest

from gatehouse.errors import BadRequest
from gatehouse.http.h2.fields import parse_request

Header = tuple[bytes, bytes]
BASE: list[Header] = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"app.localhost"),
    (b":path", b"/a?b"),
]


def test_a_plain_request() -> None:
    req = parse_request([*BASE, (b"accept", b"*/*"), (b"te", b"Trailers"), (b"x-e", b"")])
    assert (req.method, req.scheme, req.authority, req.path) == (
        b"GET",
        b"https",
        b"app.localhost",
        b"/a?b",
    )
    assert req.fields == [(b"accept", b"*/*"), (b"te", b"Trailers"), (b"x-e", b"")]
    assert req.host is None and not req.has_protocol


def test_cookie_crumbs_are_joined_last_and_host_kept_apart() -> None:
    req = parse_request(
        [*BASE, (b"cookie", b"a=1"), (b"host", b"app.localhost"), (b"x", b"y"), (b"cookie", b"b=2")]
    )
    assert req.fields == [(b"x", b"y"), (b"cookie", b"a=1; b=2")]
    assert req.host == b"app.localhost"


def test_connect_needs_no_scheme_or_path() -> None:
    req = parse_request([(b":method", b"CONNECT"), (b":authority", b"h:443")])
    assert req.method == b"CONNECT" and req.path == b""


MALFORMED: dict[str, list[Header]] = {
    "uppercase name": [*BASE, (b"X-Upper", b"1")],
    "empty name": [*BASE, (b"", b"1")],
    "space in name": [*BASE, (b"x y", b"1")],
    "colon in name": [*BASE, (b"x:y", b"1")],
    "non-ascii name": [*BASE, ("x-é".encode(), b"1")],
    "CR in value": [*BASE, (b"x", b"a\rb")],
    "LF in value": [*BASE, (b"x", b"a\nx-injected: 1")],
    "NUL in value": [*BASE, (b"x", b"a\x00b")],
    "control in value": [*BASE, (b"x", b"a\x01b")],
    "DEL in value": [*BASE, (b"x", b"a\x7f")],
    "leading space": [*BASE, (b"x", b" a")],
    "trailing tab": [*BASE, (b"x", b"a\t")],
    "bad value in a pseudo-header": [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/\r\n"),
    ],
    "connection": [*BASE, (b"connection", b"close")],
    "proxy-connection": [*BASE, (b"proxy-connection", b"keep-alive")],
    "keep-alive": [*BASE, (b"keep-alive", b"timeout=5")],
    "transfer-encoding": [*BASE, (b"transfer-encoding", b"chunked")],
    "upgrade": [*BASE, (b"upgrade", b"websocket")],
    "te gzip": [*BASE, (b"te", b"gzip")],
    "te trailers, gzip": [*BASE, (b"te", b"trailers, gzip")],
    "two hosts": [*BASE, (b"host", b"a"), (b"host", b"b")],
    "pseudo after regular": [*BASE[:3], (b"accept", b"*/*"), BASE[3]],
    "repeated pseudo": [*BASE, (b":path", b"/other")],
    "unknown pseudo": [*BASE, (b":foo", b"1")],
    "response pseudo": [*BASE, (b":status", b"200")],
    "protocol outside CONNECT": [*BASE, (b":protocol", b"websocket")],
    "no method": BASE[1:],
    "no scheme": [BASE[0], *BASE[2:]],
    "no path": BASE[:3],
    "empty path": [*BASE[:3], (b":path", b"")],
}


@pytest.mark.parametrize("headers", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_requests_are_refused(headers: list[Header]) -> None:
    with pytest.raises(BadRequest) as err:
        parse_request(headers)
    assert err.value.status == 400


def test_checks_hold_for_names_and_values_seen_before() -> None:
    # Fields already found valid are remembered; a value is not thereby a valid name,
    # and a name seen valid does not make a bad value pass.
    base = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]
    parse_request([*base, (b"x-note", b"Content Type")])
    with pytest.raises(BadRequest):
        parse_request([*base, (b"Content Type", b"x")])
    with pytest.raises(BadRequest):
        parse_request([*base, (b"x-note", b"Content Type\r\n")])
    for i in range(10_000):  # past the memo's bound: it is emptied, the rules stay
        parse_request([*base, (b"x-%d" % i, b"v%d" % i)])
    with pytest.raises(BadRequest):
        parse_request([*base, (b"X-Upper", b"v1")])
    with pytest.raises(BadRequest):
        parse_request([*base, (b"x-1", b" v1")])
