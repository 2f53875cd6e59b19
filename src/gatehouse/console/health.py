"""Upstream reachability for the routes list: one TCP connect per endpoint, in parallel.

A connect (no request) says whether something listens at each ``to`` endpoint now; it is
probed when the page is asked for, bounded by :data:`CONNECT_TIMEOUT_S` and
:data:`MAX_ENDPOINTS`, so a list of dead upstreams costs at most about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

#: Longest wait for one connect, seconds.
CONNECT_TIMEOUT_S = 1.0
#: Most endpoints probed for one page (the rest are shown as not probed).
MAX_ENDPOINTS = 64


@dataclass(frozen=True, slots=True)
class Reachability:
    ok: bool
    detail: str


async def _probe(host: str, port: int) -> Reachability:
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT_S
        )
    except TimeoutError:
        return Reachability(False, "no answer")
    except OSError as exc:
        return Reachability(False, exc.strerror or type(exc).__name__)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Reachability(True, f"{(time.monotonic() - started) * 1000:.1f} ms")


async def probe_all(endpoints: list[tuple[str, int]]) -> dict[tuple[str, int], Reachability]:
    """Each distinct endpoint's reachability (those past :data:`MAX_ENDPOINTS` are left out)."""
    unique = list(dict.fromkeys(endpoints))[:MAX_ENDPOINTS]
    results = await asyncio.gather(*(_probe(h, p) for h, p in unique))
    return dict(zip(unique, results, strict=True))
