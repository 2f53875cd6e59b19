"""Resource exhaustion, bounded: every attack here is small, on loopback, and ends in seconds.

The shared gatehouse runs with ``timeout_request_head: 1s`` so slow-header attacks are
judged quickly, and ``max_request_body_bytes: 4 MiB``; the other limits are the defaults
(32 KiB of headers, 16 KiB of URL, 64 KiB for bodies to gatehouse's own endpoints).
Refused bodies are several MiB, more than the kernel buffers on loopback: the client must
still read its 413 (gatehouse drains before closing) rather than a connection reset.
"""

from __future__ import annotations

import socket
import time

import httpx

from support.client import RawConnection, connect, read_all

from .conftest import Stack, raw, statuses


def test_huge_header_is_431_and_never_forwarded(fresh: Stack) -> None:
    data = b"GET / HTTP/1.1\r\nHost: pub.localhost\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    response, _ = raw(fresh.port, data)
    assert response is not None and response.status == 431
    assert fresh.app.requests == []


def test_many_headers_are_431(fresh: Stack) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 60) for i in range(600))
    response, _ = raw(fresh.port, b"GET / HTTP/1.1\r\nHost: pub.localhost\r\n" + headers + b"\r\n")
    assert response is not None and response.status == 431
    assert fresh.app.requests == []


def test_huge_url_is_414(fresh: Stack) -> None:
    data = b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: pub.localhost\r\n\r\n"
    response, _ = raw(fresh.port, data)
    assert response is not None and response.status == 414
    assert fresh.app.requests == []


def test_slowloris_head_gets_408_within_the_head_timeout(fresh: Stack) -> None:
    started = time.monotonic()
    with connect(fresh.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: pub.localhost\r\n")
        out = b""
        sock.settimeout(0.2)
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    assert statuses(out) == [408], out[:200]
    assert time.monotonic() - started < 3
    assert fresh.app.requests == []


def test_silent_connection_is_closed(fresh: Stack) -> None:
    started = time.monotonic()
    with connect(fresh.port) as sock:
        read_all(sock, timeout=4)
    assert time.monotonic() - started < 3.5


def test_many_idle_connections_do_not_starve_a_real_request(fresh: Stack) -> None:
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            idle.append(connect(fresh.port))
        started = time.monotonic()
        response = httpx.get(
            f"http://127.0.0.1:{fresh.port}/ok", headers={"Host": "pub.localhost"}, timeout=5
        )
        assert response.status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        for sock in idle:
            sock.close()
    assert [r.target for r in fresh.app.requests] == ["/ok"]


def test_huge_body_to_an_internal_endpoint_is_413(fresh: Stack) -> None:
    body = b"csrf=" + b"a" * (16 * 1024 * 1024)
    head = (
        b"POST /.pomerium/sign_out HTTP/1.1\r\nHost: app.localhost\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
    ) % len(body)
    started = time.monotonic()
    response, _ = raw(fresh.port, head + body)
    assert response is not None and response.status == 413
    assert time.monotonic() - started < 3


def test_upload_over_the_body_limit_is_413_and_never_forwarded(fresh: Stack) -> None:
    body = b"a" * (16 * 1024 * 1024)
    head = (
        b"PUT /upload HTTP/1.1\r\nHost: pub.localhost\r\nContent-Length: %d\r\n\r\n"
    ) % len(body)
    response, _ = raw(fresh.port, head + body)
    assert response is not None and response.status == 413
    assert fresh.app.requests == []


def test_huge_chunked_body_to_an_internal_endpoint_is_413(fresh: Stack) -> None:
    chunk = b"a" * 16_384
    body = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for _ in range(16)) + b"0\r\n\r\n"
    head = (
        b"POST /.pomerium/sign_out HTTP/1.1\r\nHost: app.localhost\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    response, _ = raw(fresh.port, head + body)
    assert response is not None and response.status == 413


def test_hostile_cookie_header_costs_linear_time(fresh: Stack) -> None:
    """Thousands of near-matches of the session cookie's name (``_gatehouse_x=``,
    ``x_gatehouse=``) in one header: answered promptly, as a request with no session."""
    cookie = "; ".join(["_gatehouse_x=1", "x_gatehouse=2", "_gatehousex"] * 900)[:30_000]
    started = time.monotonic()
    response = httpx.get(
        f"http://127.0.0.1:{fresh.port}/",
        headers={"Host": "app.localhost", "Cookie": cookie},
        timeout=5,
    )
    assert response.status_code == 401
    assert time.monotonic() - started < 1.0
    assert fresh.app.requests == []


def test_deep_pipeline_is_answered_in_order(fresh: Stack) -> None:
    with RawConnection(fresh.port) as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: pub.localhost\r\n\r\n" * 300)
        assert all(conn.read_response().status == 200 for _ in range(300))
