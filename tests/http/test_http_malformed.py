"""Malformed and abusive requests sent as raw bytes to a real gatehouse process.

Each case asserts the status the client gets and that the upstream saw nothing at all
(not a byte, not a connection).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.client import RawConnection, connect, parse_response, read_all, send_raw
from support.gatehouse import GatehouseProcess, public
from support.loop import LoopThread
from support.upstream import Upstream


@pytest.fixture(scope="module")
def up(loop_thread: LoopThread) -> Iterator[Upstream]:
    server = Upstream(loop_thread, "malformed")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gh(up: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatehouseProcess]:
    config = {
        "timeout_request_head": "1s",
        "timeout_idle": "1s",
        "max_request_header_bytes": 4096,
        "max_url_bytes": 1024,
        "routes": public([{"from": "http://app.test", "to": up.url}]),
    }
    with GatehouseProcess(config, tmp_path_factory.mktemp("malformed")) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _reset(up: Upstream) -> None:
    up.reset()


H = b"Host: app.test\r\n"

BAD_REQUESTS: dict[str, tuple[bytes, int]] = {
    "conflicting-content-length": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "duplicate-content-length": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    "content-length-list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    "negative-content-length": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    "cl-and-te": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-not-chunked-last": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-unknown": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    "bad-chunk-size": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-overflow": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n",
        400,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\n\r\n", 400),
    "bare-cr-in-header": (b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\rb\r\n\r\n", 400),
    "bare-lf-line-ending": (b"GET / HTTP/1.1\n" + b"Host: app.test\n\n", 400),
    "bare-lf-in-header": (b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\nX-Other: b\r\n\r\n", 400),
    "nul-in-header": (b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\x00b\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\n" + H + b"X-Bad : a\r\n\r\n", 400),
    "invalid-method": (b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "unknown-method": (b"FROBNICATE / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "http-0.9": (b"GET /\r\n\r\n", 400),
    "http-2.0-line": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 400),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\n" + H + b"Host: other.test\r\n\r\n", 400),
    "bad-host": (b"GET / HTTP/1.1\r\nHost: app.test:99999\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "connect": (b"CONNECT app.test:443 HTTP/1.1\r\n" + H + b"\r\n", 405),
    "oversized-head": (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 8000 + b"\r\n\r\n", 431),
    "many-headers": (
        b"GET / HTTP/1.1\r\n"
        + H
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(200))
        + b"\r\n",
        431,
    ),
    "long-url": (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_request_rejected_before_upstream(
    gh: GatehouseProcess, up: Upstream, name: str
) -> None:
    data, status = BAD_REQUESTS[name]
    raw = send_raw(gh.port, data, timeout=3)
    assert raw, "no response at all"
    resp = parse_response(raw)
    assert resp.status == status, raw[:300]
    time.sleep(0.05)  # a request forwarded by mistake would reach the upstream by now
    assert not up.opened and not up.requests, f"upstream saw {up.raw_bytes[:300]!r}"


@pytest.mark.parametrize(
    "name", ["bad-chunk-size", "obs-fold", "nul-in-header", "two-hosts", "cl-and-te"]
)
def test_malformed_request_fed_byte_by_byte(gh: GatehouseProcess, up: Upstream, name: str) -> None:
    data, status = BAD_REQUESTS[name]
    with connect(gh.port, timeout=3) as sock:
        try:
            for i in range(len(data)):
                sock.send(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_all(sock, 3)
    assert parse_response(raw).status == status
    assert not up.requests


def test_malformed_second_request_on_keepalive(gh: GatehouseProcess, up: Upstream) -> None:
    with RawConnection(gh.port) as conn:
        assert conn.request("GET", "/ok", "app.test").status == 200
        conn.send(b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\x00b\r\n\r\n")
        assert conn.read_response().status == 400
        assert conn.is_closed()
    assert [r.path for r in up.requests] == ["/ok"]


def test_error_body_has_no_exception_text(gh: GatehouseProcess) -> None:
    resp = parse_response(send_raw(gh.port, BAD_REQUESTS["bad-chunk-size"][0], timeout=3))
    assert resp.status == 400
    assert b"llhttp" not in resp.body.lower()
    assert b"HPE_" not in resp.body
    assert b"Traceback" not in resp.body


def test_slow_head_gets_408(gh: GatehouseProcess, up: Upstream) -> None:
    with connect(gh.port, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app")
        started = time.monotonic()
        raw = read_all(sock, 4)
    elapsed = time.monotonic() - started
    resp = parse_response(raw)
    assert resp.status == 408
    assert 0.8 < elapsed < 3.0
    assert not up.requests


def test_slowloris_trickle_gets_408(gh: GatehouseProcess, up: Upstream) -> None:
    """Bytes trickling in do not reset the head timer."""
    with connect(gh.port, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"X: y\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
        raw = read_all(sock, 1)
    assert closed or raw, "connection still open after 4s of trickling"
    assert parse_response(raw).status == 408
    assert not up.requests


def test_idle_keepalive_closed_after_timeout_idle(gh: GatehouseProcess) -> None:
    with RawConnection(gh.port) as conn:
        assert conn.request("GET", "/", "app.test").status == 200
        started = time.monotonic()
        assert conn.is_closed(timeout=4)
        assert 0.8 < time.monotonic() - started < 3.0


def test_connection_without_any_bytes_is_closed(gh: GatehouseProcess) -> None:
    with connect(gh.port, timeout=5) as sock:
        started = time.monotonic()
        raw = read_all(sock, 4)
    assert time.monotonic() - started < 3.0
    assert raw == b"" or parse_response(raw).status == 408


def test_valid_request_still_works(gh: GatehouseProcess, up: Upstream) -> None:
    resp = parse_response(
        send_raw(gh.port, b"GET /fine HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    )
    assert resp.status == 200
    assert up.requests[0].path == "/fine"
