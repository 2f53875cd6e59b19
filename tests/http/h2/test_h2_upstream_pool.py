"""The HTTP/2 upstream pool on its own, against a real ``h2`` server on loopback: its
connections close with the HTTP/1.1 pool they sit beside (worker shutdown), and the idle
sweep closes those without streams (as after a reload that removed their route) but not
one carrying a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from gatehouse.errors import UpstreamError
from gatehouse.http.upstream import ConnectionPool, Endpoint
from gatehouse.proxy.forward_h2 import h2_pool_for
from support.h2upstream import H2Upstream

pytestmark = pytest.mark.timeout(30)


class Sink:
    """Records one response (an ``H2ResponseSink``)."""

    def __init__(self) -> None:
        self.status = 0
        self.error: UpstreamError | None = None

    def on_response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        self.status = status

    def on_response_body(self, chunk: bytes) -> None:
        pass

    def on_response_end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        pass

    def on_response_error(self, error: UpstreamError) -> None:
        self.error = error


@pytest.fixture
def h2up() -> Iterator[H2Upstream]:
    up = H2Upstream()
    yield up
    up.close()


def _request(path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", path)]


async def _opened(up: H2Upstream, n: int) -> bool:
    return await asyncio.to_thread(up.wait, lambda: up.open_connections == n)


def test_closing_the_pool_closes_its_h2_connections(h2up: H2Upstream) -> None:
    async def run() -> None:
        pool = ConnectionPool(asyncio.get_running_loop())
        endpoint = Endpoint(scheme="h2c", host="127.0.0.1", port=h2up.port)
        h2pool = h2_pool_for(pool)
        assert h2_pool_for(pool) is h2pool  # one per pool
        await h2pool.connect(endpoint, 5.0, None)
        await h2pool.connect(endpoint, 5.0, None)
        assert await _opened(h2up, 2)
        pool.close_all()
        assert await _opened(h2up, 0)
        assert h2pool.take(endpoint) is None

    asyncio.run(run())


def test_idle_sweep_closes_only_connections_without_streams(h2up: H2Upstream) -> None:
    async def run() -> None:
        pool = ConnectionPool(asyncio.get_running_loop())
        endpoint = Endpoint(scheme="h2c", host="127.0.0.1", port=h2up.port)
        h2pool = h2_pool_for(pool)
        idle = await h2pool.connect(endpoint, 5.0, None)
        busy = await h2pool.connect(endpoint, 5.0, None)
        sink = Sink()
        busy.open_stream(_request(b"/hang"), sink, end_stream=True)
        assert await asyncio.to_thread(h2up.wait, lambda: len(h2up.streams) == 1)
        h2pool.close_idle(time.monotonic() + 1.0)  # everything idle counts as old
        assert await _opened(h2up, 1)
        assert idle.closed and not busy.closed
        assert h2pool.take(endpoint) is busy
        pool.close_all()
        assert await _opened(h2up, 0)

    asyncio.run(run())
