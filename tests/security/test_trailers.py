"""Request trailers are a second header block: a client must not smuggle identity,
forwarding, credential or framing fields to the upstream through them. Over HTTP/2 to an
``h2c`` upstream, forbidden trailer fields are dropped and the rest forwarded; towards an
HTTP/1.1 upstream no trailer is forwarded at all (docs/http2.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from support.gatehouse import GatehouseProcess, public
from support.h2client import H2Client
from support.h2upstream import H2Upstream
from support.upstream import Respond, Upstream

Start = Callable[..., GatehouseProcess]

pytestmark = pytest.mark.timeout(60)

FORGED = [
    (b"x-pomerium-jwt-assertion", b"forged"),
    (b"x-pomerium-claim-email", b"root@example.com"),
    (b"x-pomerium-jwt-assertion-for", b"forged"),
    (b"x-forwarded-for", b"10.9.9.9"),
    (b"x-forwarded-proto", b"https"),
    (b"x-real-ip", b"10.9.9.9"),
    (b"authorization", b"Bearer stolen"),
    (b"proxy-authorization", b"Basic c3RvbGVu"),
    (b"cookie", b"_pomerium=stolen"),
    (b"host", b"elsewhere"),
    (b"content-length", b"99"),
]
MARKERS = (b"forged", b"stolen", b"c3rvbgvu", b"10.9.9.9", b"root@example.com", b"elsewhere")


@pytest.fixture
def h2up() -> Iterator[H2Upstream]:
    up = H2Upstream(max_streams=5)
    yield up
    up.close()


def _post_with_trailers(
    client: H2Client, trailers: list[tuple[bytes, bytes]], authority: str
) -> int:
    sid = client.request(
        "/up",
        method="POST",
        headers=[("content-type", "application/octet-stream"), ("te", "trailers")],
        body=b"hello",
        end=False,
        authority=authority,
    )
    client.conn.send_headers(sid, trailers, end_stream=True)
    client.flush()
    return sid


def test_forged_trailers_never_reach_an_h2c_upstream(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    gh = start_gatehouse(
        {"codec_type": "auto", "routes": public([{"from": "http://h2.localhost", "to": h2up.url}])}
    )
    trailers = [(b"x-checksum", b"abc123"), *FORGED]
    with H2Client(gh.port, authority="h2.localhost", outbound_checks=False) as client:
        result = client.response(_post_with_trailers(client, trailers, "h2.localhost"))
    assert result.status == 200
    seen = h2up.streams[-1]
    assert seen.trailers == [(b"x-checksum", b"abc123")]
    # Nor did a forged value slip into the request's headers.
    sent = b"\n".join(value for _, value in seen.headers).lower()
    for marker in MARKERS:
        assert marker not in sent
    assert bytes(seen.body) == b"hello"


def test_no_trailer_reaches_an_http1_upstream(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream("h1", Respond(200, body=b"ok"))
    gh = start_gatehouse(
        {"codec_type": "auto", "routes": public([{"from": "http://h1.localhost", "to": up.url}])}
    )
    with H2Client(gh.port, authority="h1.localhost", outbound_checks=False) as client:
        result = client.response(_post_with_trailers(client, FORGED, "h1.localhost"))
    assert result.status == 200
    assert up.requests[-1].body == b"hello"
    raw = up.raw_bytes.lower()
    for marker in MARKERS:
        assert marker not in raw
