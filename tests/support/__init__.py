"""Reusable test machinery: real gatehouse processes, real upstreams on loopback, raw clients.

* :mod:`support.loop` — an asyncio loop in a background thread, so synchronous tests can
  run servers while they drive clients;
* :mod:`support.upstream` — a raw-socket HTTP/1.1 upstream that records every byte and
  request it receives and answers with a scripted :class:`~support.upstream.Action`;
  a WebSocket echo server (the ``websockets`` package); :func:`~support.upstream.closed_port`;
* :mod:`support.gatehouse` — a ``gatehouse run`` process started from a config dict or text;
* :mod:`support.client` — raw-bytes HTTP client helpers;
* :func:`wait_until` — poll for a condition instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
