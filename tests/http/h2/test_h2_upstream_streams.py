"""HTTP/2 upstream streams through a real gatehouse, frame by frame: request trailers
forwarded (filtered) to an ``h2c`` upstream and dropped towards HTTP/1.1 ones; a client's
RST_STREAM reaches the upstream; streams never pile up on the upstream connection (a
client reset, a response that ends before the request body); a refused stream is sent
again.

The upstream is an ``h2``-library server (:mod:`support.h2upstream`) announcing a small
SETTINGS_MAX_CONCURRENT_STREAMS, so a stream gatehouse forgot to close would soon force
a second upstream connection, which the tests count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from h2.errors import ErrorCodes

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.h2client import H2Client
from support.h2upstream import H2Upstream
from support.upstream import Respond, Upstream

Start = Callable[..., GatehouseProcess]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h2up() -> Iterator[H2Upstream]:
    up = H2Upstream(max_streams=5)
    yield up
    up.close()


def _gatehouse(start: Start, *routes: dict[str, object]) -> GatehouseProcess:
    return start({"codec_type": "auto", "routes": public(list(routes))})


def _post_with_trailers(
    client: H2Client, path: str, trailers: list[tuple[bytes, bytes]], authority: str
) -> int:
    sid = client.request(
        path,
        method="POST",
        headers=[("content-type", "application/octet-stream"), ("te", "trailers")],
        body=b"hello",
        end=False,
        authority=authority,
    )
    client.conn.send_headers(sid, trailers, end_stream=True)
    client.flush()
    return sid


def test_request_trailers_reach_h2c_upstream_filtered(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    gh = _gatehouse(start_gatehouse, {"from": "http://h2.localhost", "to": h2up.url})
    # Forged identity, credential and framing trailers: tests/security/test_trailers.py.
    trailers = [(b"x-checksum", b"abc123"), (b"grpc-status-details-bin", b"AAAA")]
    with H2Client(gh.port, authority="h2.localhost") as client:
        result = client.response(_post_with_trailers(client, "/up", trailers, "h2.localhost"))
    assert result.status == 200
    assert bytes(result.body) == b"body: 5"
    # The upstream's response trailers come back too.
    assert (b"x-upstream-end", b"done") in result.trailers
    seen = h2up.streams[-1]
    assert seen.trailers == [(b"x-checksum", b"abc123"), (b"grpc-status-details-bin", b"AAAA")]
    assert bytes(seen.body) == b"hello"


def test_request_trailers_are_dropped_towards_http1(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream("h1", Respond(200, body=b"ok"))
    gh = _gatehouse(start_gatehouse, {"from": "http://h1.localhost", "to": up.url})
    with H2Client(gh.port, authority="h1.localhost") as client:
        result = client.response(
            _post_with_trailers(client, "/", [(b"x-checksum", b"abc123")], "h1.localhost")
        )
    assert result.status == 200
    assert up.requests[-1].body == b"hello"
    assert b"x-checksum" not in up.raw_bytes


def test_client_reset_resets_the_upstream_stream(start_gatehouse: Start, h2up: H2Upstream) -> None:
    """Many more resets than the upstream's stream limit, all on one upstream connection:
    each reached the upstream as RST_STREAM(CANCEL) and freed its slot."""
    gh = _gatehouse(start_gatehouse, {"from": "http://h2.localhost", "to": h2up.url})
    with H2Client(gh.port, authority="h2.localhost") as client:
        for i in range(12):
            sid = client.request("/hang")
            assert h2up.wait(lambda n=i: len(h2up.streams) == n + 1)
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.flush()
            assert h2up.wait(lambda: h2up.streams[-1].reset is not None)
            assert h2up.streams[-1].reset == ErrorCodes.CANCEL
        assert client.get("/after").status == 200
    assert h2up.connections == 1


def test_response_before_request_end_frees_the_stream(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    """The upstream answers before the request body ends: gatehouse stops the request side
    (RST_STREAM), so the stream closes at both ends and the connection's count stays low."""
    gh = _gatehouse(start_gatehouse, {"from": "http://h2.localhost", "to": h2up.url})
    with H2Client(gh.port, authority="h2.localhost") as client:
        for _ in range(12):
            sid = client.request("/early", method="POST", body=b"part", end=False)
            result = client.response(sid)
            assert result.status == 200
        assert client.get("/after").status == 200
    assert h2up.connections == 1
    assert all(s.reset == ErrorCodes.CANCEL for s in h2up.streams[:-1])


def test_refused_stream_is_sent_again_with_its_body(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    """REFUSED_STREAM means the upstream did not process the request (RFC 9113 §8.7):
    gatehouse sends it again, body and trailers included, and the client sees one answer."""
    gh = _gatehouse(start_gatehouse, {"from": "http://h2.localhost", "to": h2up.url})
    with H2Client(gh.port, authority="h2.localhost") as client:
        sid = _post_with_trailers(client, "/refuse-post", [(b"x-sum", b"1")], "h2.localhost")
        result = client.response(sid)
    assert result.status == 200
    assert bytes(result.body) == b"body: 5"
    tries = [s for s in h2up.streams if s.header(b":path") == b"/refuse-post"]
    assert len(tries) == 2
    assert bytes(tries[1].body) == b"hello"
    assert tries[1].trailers == [(b"x-sum", b"1")]


def test_stale_pooled_connection_is_retried_for_bodiless_requests(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    """The upstream drops a pooled connection (no GOAWAY) as a GET arrives on it: the GET
    is sent again on a fresh connection, as HTTP/1.1 requests are."""
    gh = _gatehouse(start_gatehouse, {"from": "http://h2.localhost", "to": h2up.url})
    with H2Client(gh.port, authority="h2.localhost") as client:
        assert client.get("/first").status == 200
        result = client.get("/drop-me")
    assert result.status == 200
    assert h2up.connections == 2
    assert len([s for s in h2up.streams if s.header(b":path") == b"/drop-me"]) == 2


def test_h2c_endpoints_are_health_checked_over_http2(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    """An HTTP/1.1 probe cannot reach an h2c upstream; the HTTP/2 one tells the healthy
    endpoint from the failing one, and traffic goes to the healthy one only."""
    sick = H2Upstream(health_status=503)
    try:
        gh = _gatehouse(
            start_gatehouse,
            {
                "from": "http://h2.localhost",
                "to": [h2up.url, sick.url],
                "healthy_panic_threshold": 0,
                "health_checks": [
                    {
                        "timeout": "2s",
                        "interval": "1s",
                        "unhealthy_threshold": 1,
                        "healthy_threshold": 1,
                        "http_health_check": {"path": "/healthz"},
                    }
                ],
            },
        )
        wait_until(
            lambda: any(
                "is now unhealthy" in str(r.get("message", "")) and sick.url in str(r)
                for r in gh.logs()
            ),
            timeout=10,
            what="the failing endpoint marked unhealthy",
        )
        with H2Client(gh.port, authority="h2.localhost") as client:
            for _ in range(6):
                assert client.get("/work").status == 200
        assert not any(
            "is now unhealthy" in str(r.get("message", "")) and h2up.url in str(r)
            for r in gh.logs()
        )
        assert len([s for s in h2up.streams if s.header(b":path") == b"/work"]) == 6
        assert not [s for s in sick.streams if s.header(b":path") == b"/work"]
    finally:
        sick.close()


def test_outlier_detection_ejects_a_failing_h2c_endpoint(
    start_gatehouse: Start, h2up: H2Upstream
) -> None:
    """Envoy's consecutive_5xx over HTTP/2 upstreams: three 500s in a row eject the
    endpoint for base_ejection_time, and the next requests all go to the other one."""
    failing = H2Upstream(status=500)
    try:
        gh = _gatehouse(
            start_gatehouse,
            {
                "from": "http://h2.localhost",
                "to": [h2up.url, failing.url],
                "outlier_detection": {"consecutive_5xx": 3, "base_ejection_time": "30s"},
            },
        )
        with H2Client(gh.port, authority="h2.localhost") as client:
            first = [client.get("/work").status for _ in range(6)]
            assert sorted(first) == [200, 200, 200, 500, 500, 500]  # round robin
            assert [client.get("/work").status for _ in range(10)] == [200] * 10
        assert len([s for s in failing.streams if s.header(b":path") == b"/work"]) == 3
        assert len([s for s in h2up.streams if s.header(b":path") == b"/work"]) == 13
    finally:
        failing.close()
