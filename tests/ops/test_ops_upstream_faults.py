"""Upstream faults hit only the request that met them, and the pool recovers.

One gatehouse, two upstreams: ``ok.localhost`` (healthy) and ``faulty.localhost`` (each
test scripts a fault; route ``timeout`` and ``idle_timeout`` are 1 s). While the faulty
request runs, a thread keeps sending requests to the healthy route on one keep-alive
connection: every one must succeed. Then the faulty upstream is made healthy and the next
request to it must succeed too (no poisoned pooled connection).

What a client sees:
* refused / garbage → 502, slow head → 504 after the route timeout;
* reset after the head, slow body (Content-Length) → the announced body never arrives in
  full and the connection is closed; slow chunked body → the terminating chunk never
  arrives and the connection is closed. Never a complete-looking response.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support import wait_until
from support.client import RawConnection
from support.gatehouse import GatehouseProcess, public
from support.upstream import (
    Action,
    Chunked,
    Raw,
    Reset,
    Respond,
    SlowBody,
    SlowHead,
    Upstream,
    closed_port,
)

pytestmark = pytest.mark.e2e

FAULT_TIMEOUT = "1s"


class HealthyLoad:
    """Requests to the healthy route, back to back on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = RawConnection(self.port)
        try:
            while not self._stop.is_set():
                try:
                    r = conn.request("GET", "/healthy", "ok.localhost")
                except (OSError, ConnectionError) as exc:
                    self.failures.append(repr(exc))
                    conn.close()
                    conn = RawConnection(self.port)
                    continue
                if r.status == 200 and r.body == b"hello from ok":
                    self.ok += 1
                else:
                    self.failures.append(f"{r.status} {r.body[:60]!r}")
        finally:
            conn.close()

    def __enter__(self) -> HealthyLoad:
        self._thread.start()
        wait_until(lambda: self.ok or self.failures, 5, what="the first healthy response")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def proxy(
    start_gatehouse: Callable[..., GatehouseProcess], make_upstream: Callable[..., Upstream]
) -> Iterator[tuple[GatehouseProcess, Upstream]]:
    ok = make_upstream("ok")
    faulty = make_upstream("faulty")
    routes: list[dict[str, Any]] = [
        {"from": "http://ok.localhost", "to": ok.url},
        {
            "from": "http://faulty.localhost",
            "to": faulty.url,
            "timeout": FAULT_TIMEOUT,
            "idle_timeout": FAULT_TIMEOUT,
        },
        {"from": "http://refused.localhost", "to": f"http://127.0.0.1:{closed_port()}"},
    ]
    gh = start_gatehouse({"routes": public(routes)})
    yield gh, faulty


def _faulty_then_recovers(
    gh: GatehouseProcess, faulty: Upstream, action: Action, check: Callable[[RawConnection], None]
) -> None:
    faulty.respond(action)
    with HealthyLoad(gh.port) as load:
        with RawConnection(gh.port, timeout=10) as conn:
            check(conn)
        ok_during = load.ok
    assert load.failures == [], load.failures
    assert ok_during > 0, "no healthy request completed while the fault was in progress"
    faulty.respond(Respond(body=b"healthy again"))
    with RawConnection(gh.port) as conn:
        r = conn.request("GET", "/after", "faulty.localhost")
    assert (r.status, r.body) == (200, b"healthy again")


def test_connection_refused_is_502_for_that_request_only(proxy) -> None:  # type: ignore[no-untyped-def]
    gh, faulty = proxy

    def check(conn: RawConnection) -> None:
        r = conn.request("GET", "/", "refused.localhost")
        assert r.status == 502
        # The client connection stays usable: the fault was the upstream's.
        assert conn.request("GET", "/healthy", "ok.localhost").status == 200

    _faulty_then_recovers(gh, faulty, Respond(), check)


def test_garbage_instead_of_http_is_502(proxy) -> None:  # type: ignore[no-untyped-def]
    gh, faulty = proxy

    def check(conn: RawConnection) -> None:
        assert conn.request("GET", "/", "faulty.localhost").status == 502

    _faulty_then_recovers(
        gh, faulty, Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\nnot http at all\r\n\r\n"), check
    )


def test_slow_response_head_is_504_after_the_route_timeout(proxy) -> None:  # type: ignore[no-untyped-def]
    gh, faulty = proxy

    def check(conn: RawConnection) -> None:
        started = time.monotonic()
        r = conn.request("GET", "/", "faulty.localhost")
        took = time.monotonic() - started
        assert r.status == 504
        assert 0.9 <= took < 3.0, took

    _faulty_then_recovers(gh, faulty, SlowHead(delay=5.0), check)


def test_reset_mid_response_cuts_the_client_connection(proxy) -> None:  # type: ignore[no-untyped-def]
    gh, faulty = proxy

    def check(conn: RawConnection) -> None:
        conn.send(b"GET / HTTP/1.1\r\nHost: faulty.localhost\r\n\r\n")
        with pytest.raises(ConnectionError, match="closed with"):
            conn.read_response()  # 1000 bytes announced, 7 sent, then the connection ends

    _faulty_then_recovers(gh, faulty, Reset(length=1000, partial=b"partial"), check)


def test_stalled_body_with_content_length_is_cut_never_a_short_success(proxy) -> None:  # type: ignore[no-untyped-def]
    gh, faulty = proxy

    def check(conn: RawConnection) -> None:
        started = time.monotonic()
        conn.send(b"GET / HTTP/1.1\r\nHost: faulty.localhost\r\n\r\n")
        with pytest.raises(ConnectionError, match="closed with"):
            conn.read_response()
        assert time.monotonic() - started < 5.0  # cut by idle_timeout, not by the upstream

    _faulty_then_recovers(gh, faulty, SlowBody(parts=[b"a" * 10, b"b" * 10], delay=3.0), check)


def test_stalled_chunked_body_never_gets_its_last_chunk(proxy) -> None:  # type: ignore[no-untyped-def]
    gh, faulty = proxy

    def check(conn: RawConnection) -> None:
        conn.send(b"GET / HTTP/1.1\r\nHost: faulty.localhost\r\n\r\n")
        with pytest.raises(ConnectionError):
            conn.read_response()  # the chunk parser needs the 0-size chunk: it never comes

    _faulty_then_recovers(gh, faulty, Chunked(chunks=[b"first", b"second"], delay=3.0), check)
