"""Module-scoped upstreams for proxy tests (recordings and actions reset before each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.loop import LoopThread
from support.upstream import Respond, Upstream, WebSocketEcho


def _default(up: Upstream) -> None:
    up.respond(Respond(body=f"hello from {up.name}".encode(), headers=[("X-Upstream", up.name)]))


@pytest.fixture(scope="module")
def ups(loop_thread: LoopThread) -> Iterator[dict[str, Upstream]]:
    """Three upstreams, ``a``, ``b`` and ``c``, shared by a test module."""
    made = {name: Upstream(loop_thread, name) for name in ("a", "b", "c")}
    yield made
    for up in made.values():
        up.close()


@pytest.fixture(scope="module")
def ws_server(loop_thread: LoopThread) -> Iterator[WebSocketEcho]:
    server = WebSocketEcho(loop_thread)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_upstreams(request: pytest.FixtureRequest) -> None:
    if "ups" in request.fixturenames:
        for up in request.getfixturevalue("ups").values():
            up.reset()
            _default(up)
