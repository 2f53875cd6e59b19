"""gatehouse raises its open-files limit, so a low soft limit does not cap its connections.

Started with a soft ``RLIMIT_NOFILE`` of 256 (the hard limit untouched), gatehouse must still
serve 400 concurrent keep-alive clients, each with a request proxied upstream (about 800
descriptors); without raising the limit, accepts beyond ~250 fail with ``EMFILE``.
"""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from gatehouse.fdlimit import raise_open_files_limit
from support.client import parse_response
from support.gatehouse import GatehouseProcess, public
from support.upstream import Upstream

CLIENTS = 400
LOW_SOFT_LIMIT = 256


@contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """Lower this process's soft limit while a child is started (the child inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"hello from upstream"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_many_connections_under_a_low_soft_limit(upstream: Upstream, tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * CLIENTS:
        pytest.skip(f"hard open-files limit {hard} is too low for this test")
    config = {"routes": public([{"from": "http://app.test", "to": upstream.url}])}
    with soft_nofile(LOW_SOFT_LIMIT):
        gh = GatehouseProcess(config, tmp_path)
        gh.start()
    try:
        assert gh.find_log(lambda r: r.get("message", "").startswith("open files limit raised"))
        with ExitStack() as stack:
            socks = []
            for _ in range(CLIENTS):
                s = stack.enter_context(socket.create_connection(("127.0.0.1", gh.port), 10))
                s.settimeout(10)
                socks.append(s)
            for s in socks:  # every request in flight at once
                s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            statuses = [parse_response(_read_response(s)).status for s in socks]
        assert statuses == [200] * CLIENTS
    finally:
        assert gh.stop() == 0


def test_raising_is_idempotent_and_reports_the_limit() -> None:
    limit = raise_open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard == limit
    assert raise_open_files_limit() == limit
