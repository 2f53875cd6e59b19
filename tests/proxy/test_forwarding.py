"""Proxy behaviours on the wire: keep-alive and reuse, framing, headers, failures.

Driven with raw bytes on one side and a recording upstream on the other, so each test
asserts exactly what the client and the upstream saw.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from support import wait_until
from support.client import RawConnection, connect, parse_response, read_all, send_raw
from support.gatehouse import GatehouseProcess, public
from support.upstream import (
    Chunked,
    Download,
    Echo,
    Hang,
    Interim,
    Raw,
    ReadToClose,
    Reset,
    Respond,
    Upstream,
    closed_port,
)


def _config(ups: dict[str, Upstream]) -> dict[str, Any]:
    return {
        "default_upstream_timeout": "5s",
        "routes": public(
            [
                {"from": "http://app.test", "to": ups["a"].url},
                {"from": "http://closed.test", "to": f"http://127.0.0.1:{closed_port()}"},
            ]
        ),
    }


@pytest.fixture(scope="module")
def gh(
    ups: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatehouseProcess]:
    with GatehouseProcess(_config(ups), tmp_path_factory.mktemp("fwd")) as proc:
        yield proc


@pytest.fixture
def a(ups: dict[str, Upstream]) -> Upstream:
    return ups["a"]


# -- keep-alive and reuse --------------------------------------------------------------


def test_keep_alive_both_sides_and_upstream_reuse(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        for i in range(5):
            r = conn.request("GET", f"/n/{i}", "app.test")
            assert r.status == 200
            assert r.body == b"hello from a"
    assert [r.path for r in a.requests] == [f"/n/{i}" for i in range(5)]
    assert len({r.conn_id for r in a.requests}) == 1, "the upstream connection was not reused"


def test_upstream_reuse_across_client_connections(gh: GatehouseProcess, a: Upstream) -> None:
    for _ in range(3):
        with RawConnection(gh.port) as conn:
            assert conn.request("GET", "/", "app.test").status == 200
    assert len({r.conn_id for r in a.requests}) == 1


def test_pipelined_requests_answered_in_order(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        conn.send(b"".join(b"GET /p/%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % i for i in range(3)))
        for _ in range(3):
            assert conn.read_response().status == 200
    assert [r.path for r in a.requests] == ["/p/0", "/p/1", "/p/2"]


def test_connection_close_from_client(gh: GatehouseProcess) -> None:
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "app.test", headers=[("Connection", "close")])
        assert r.status == 200
        assert conn.is_closed()


def test_http10_client(gh: GatehouseProcess) -> None:
    raw = send_raw(gh.port, b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
    assert raw.startswith(b"HTTP/1.")
    r = parse_response(raw)
    assert r.status == 200
    assert r.body == b"hello from a"


# -- framing ---------------------------------------------------------------------------


def test_chunked_request_body(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Echo())
    with RawConnection(gh.port) as conn:
        conn.send(
            b"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
        )
        r = conn.read_response()
        assert r.status == 200
        assert r.body == b"hello world"
        assert conn.request("GET", "/after", "app.test").status == 200
    assert a.requests[0].body == b"hello world"


def test_content_length_request_body(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Echo())
    body = bytes(range(256)) * 4096  # 1 MiB
    with RawConnection(gh.port) as conn:
        r = conn.request("POST", "/up", "app.test", body=body)
    assert r.status == 200
    assert r.body == body
    assert a.requests[0].header("content-length") == str(len(body))


def test_chunked_response(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Chunked(chunks=[b"one ", b"two ", b"three"], delay=0.05))
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "app.test")
        assert r.status == 200
        assert r.body == b"one two three"
        assert conn.request("GET", "/", "app.test").status == 200


def test_head_request(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Respond(body=b"x" * 100))
    with RawConnection(gh.port) as conn:
        r = conn.request("HEAD", "/", "app.test")
        assert r.status == 200
        assert r.header("content-length") == "100"
        assert r.body == b""
        # The connection is still framed correctly: no stray body bytes.
        r2 = conn.request("GET", "/", "app.test")
        assert r2.status == 200
        assert r2.body == b"x" * 100
    assert a.requests[0].method == "HEAD"


def test_expect_100_continue(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Echo())
    with RawConnection(gh.port) as conn:
        conn.send(
            b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = conn.buf.until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100")
        conn.send(b"hello")
        r = conn.read_response()
        assert r.status == 200
        assert r.body == b"hello"
    assert a.requests[0].header("expect") is None


def test_read_to_close_response(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(ReadToClose(body=b"until the end"))
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "app.test")
        assert r.status == 200
        assert r.body == b"until the end"
        a.respond(Respond(body=b"next"))
        assert conn.request("GET", "/", "app.test").body == b"next"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(gh: GatehouseProcess, a: Upstream, status: int) -> None:
    a.respond(Respond(status=status, length=False, headers=[("ETag", '"v1"')]))
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "app.test")
        assert r.status == status
        assert r.body == b""
        assert r.header("transfer-encoding") is None
        a.respond(Respond(body=b"next"))
        assert conn.request("GET", "/", "app.test").body == b"next"


def test_interim_1xx_from_upstream(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Interim(status=103))
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "app.test")
        assert r.status == 200
        assert r.body == b"final"
        assert conn.request("GET", "/", "app.test").status == 200


# -- headers ---------------------------------------------------------------------------


def test_hop_by_hop_request_headers_not_forwarded(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        r = conn.request(
            "GET",
            "/",
            "app.test",
            headers=[
                ("Connection", "keep-alive, X-Private"),
                ("X-Private", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Trailer", "X-T"),
                ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("Proxy-Connection", "keep-alive"),
                ("X-Kept", "yes"),
            ],
        )
        assert r.status == 200
    names = a.requests[0].header_names()
    for hop in (
        "connection",
        "x-private",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ):
        assert hop not in names, hop
    assert a.requests[0].header("x-kept") == "yes"


def test_hop_by_hop_response_headers_not_forwarded(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(
        Respond(
            body=b"ok",
            headers=[
                ("Connection", "X-Internal"),
                ("X-Internal", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"),
                ("X-Public", "1"),
            ],
        )
    )
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "app.test")
    names = {k.lower() for k, _ in r.headers}
    assert "x-internal" not in names
    assert "keep-alive" not in names
    assert "proxy-authenticate" not in names
    assert r.header("x-public") == "1"


def test_x_forwarded_headers(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        conn.request(
            "GET",
            "/",
            "app.test:8080",
            headers=[
                ("X-Forwarded-For", "203.0.113.9"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.test"),
            ],
        )
    req = a.requests[0]
    assert req.header_all("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert req.header_all("x-forwarded-proto") == ["http"]
    assert req.header_all("x-forwarded-host") == ["app.test:8080"]


def test_x_forwarded_for_without_client_value(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        conn.request("GET", "/", "app.test")
    assert a.requests[0].header_all("x-forwarded-for") == ["127.0.0.1"]


def test_client_identity_headers_never_reach_upstream(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        conn.request(
            "GET",
            "/",
            "app.test",
            headers=[
                ("X-Pomerium-Jwt-Assertion", "forged.jwt.value"),
                ("x-pomerium-jwt-assertion-for", "forged"),
                ("X-Pomerium-Claim-Email", "admin@example.com"),
                ("X-POMERIUM-CLAIM-GROUPS", "admins"),
            ],
        )
    names = a.requests[0].header_names()
    assert not [n for n in names if n.startswith("x-pomerium-")], names
    assert b"forged" not in a.requests[0].raw_head
    assert b"admin@example.com" not in a.requests[0].raw_head


# -- cancellation and failures ---------------------------------------------------------


def test_client_going_away_cancels_upstream(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Hang())
    sock = connect(gh.port)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
    wait_until(lambda: a.requests, 3, what="the upstream to get the request")
    sock.close()
    wait_until(lambda: a.closed, 3, what="the upstream connection to close")


def test_client_reset_cancels_upstream(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Hang())
    sock = connect(gh.port)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
    wait_until(lambda: a.requests, 3, what="the upstream to get the request")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    wait_until(lambda: a.closed, 3, what="the upstream connection to close")


def test_client_going_away_mid_download_cancels_upstream(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Download(size=512 << 20))
    sock = connect(gh.port)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
    wait_until(lambda: a.closed, 5, what="the upstream connection to close")


def test_upstream_refused_is_502(gh: GatehouseProcess) -> None:
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/", "closed.test", headers=[("Accept", "text/html")])
    assert r.status == 502
    assert r.header("content-type").startswith("text/html")
    assert b"Connection refused" not in r.body  # no exception text for clients
    gh.wait_access(lambda rec: rec.get("host") == "closed.test" and rec.get("status") == 502)


def test_upstream_garbage_is_502(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    with RawConnection(gh.port) as conn:
        assert conn.request("GET", "/", "app.test").status == 502


def test_upstream_closes_without_answer_is_502(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Raw(b""))
    with RawConnection(gh.port) as conn:
        assert conn.request("GET", "/", "app.test").status == 502


def test_upstream_reset_mid_response_is_an_error_not_a_truncated_success(
    gh: GatehouseProcess, a: Upstream
) -> None:
    a.respond(Reset(length=1000, partial=b"partial"))
    with RawConnection(gh.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        with pytest.raises((ConnectionError, socket.timeout)):
            r = conn.read_response()
            raise AssertionError(f"complete response from a reset upstream: {r.status} {r.body!r}")


def test_upstream_reset_mid_chunked_response_is_an_error(gh: GatehouseProcess, a: Upstream) -> None:
    a.respond(Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"))
    with RawConnection(gh.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        with pytest.raises((ConnectionError, socket.timeout)):
            r = conn.read_response()
            raise AssertionError(f"complete response from a broken upstream: {r.status} {r.body!r}")


def test_access_log_line(gh: GatehouseProcess, a: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        conn.request("GET", "/logged/path?secret=1", "app.test", body=b"abc")
    line = gh.wait_access(lambda rec: rec.get("path") == "/logged/path")
    for key in (
        "time",
        "route",
        "method",
        "host",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "upstream_ms",
        "client",
    ):
        assert key in line, key
    assert line["status"] == 200
    assert line["method"] == "GET"
    assert line["host"] == "app.test"
    assert line["bytes"] == len(b"hello from a")
    assert line["client"] == "127.0.0.1"
    assert "secret" not in str(line)


def test_request_after_upstream_closed_idle_connection(gh: GatehouseProcess, a: Upstream) -> None:
    """The keep-alive race: the upstream closes a pooled connection; the next request still works."""
    a.respond(Respond(body=b"bye", close=True))
    with RawConnection(gh.port) as conn:
        assert conn.request("GET", "/", "app.test").body == b"bye"
        wait_until(lambda: a.closed, 3)
        a.respond(Respond(body=b"fresh"))
        assert conn.request("GET", "/", "app.test").body == b"fresh"
    assert len({r.conn_id for r in a.requests}) == 2


def test_read_all_helper_sees_close(gh: GatehouseProcess) -> None:
    with connect(gh.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")
