"""Circuit breaking for a route's upstreams (Pomerium's ``circuit_breaker_thresholds``,
Envoy's cluster ``CircuitBreakers``).

Theory of operation: a request takes a slot before it is sent upstream and gives it back
when its response has ended. With HTTP/1.1 upstreams each request in flight holds one
connection, so the slot count is the smaller of ``max_requests`` and ``max_connections``.
When none is free, the request waits in line (first come, first served) if fewer than
``max_pending_requests`` (Envoy's default 1024) already do, until a slot frees or the
route's timeout passes (504); otherwise it is refused at once with 503, as Envoy does.
``max_retries`` bounds retries in flight (Envoy's default 3). Limits count per worker
process: Envoy's are per process too.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..config.upstream_health import CircuitBreakerThresholds
from ..errors import UpstreamOverloaded, UpstreamTimeout

#: Envoy's defaults for thresholds left unset.
DEFAULT_MAX_PENDING = 1024
DEFAULT_MAX_RETRIES = 3


class CircuitBreaker:
    """The slots of one route's upstreams."""

    __slots__ = ("_waiters", "in_flight", "limit", "max_pending", "max_retries", "retries")

    def __init__(self, thresholds: CircuitBreakerThresholds) -> None:
        caps = [c for c in (thresholds.max_requests, thresholds.max_connections) if c is not None]
        self.limit = min(caps) if caps else None
        self.max_pending = (
            DEFAULT_MAX_PENDING
            if thresholds.max_pending_requests is None
            else thresholds.max_pending_requests
        )
        self.max_retries = (
            DEFAULT_MAX_RETRIES if thresholds.max_retries is None else thresholds.max_retries
        )
        self.in_flight = 0
        self.retries = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, timeout_s: float) -> None:
        """Take a slot, waiting at most ``timeout_s`` (0: no bound).

        Raises:
            UpstreamOverloaded: no slot and the line is full (503).
            UpstreamTimeout: no slot freed in time (504).
        """
        limit = self.limit
        if limit is None or (self.in_flight < limit and not self._waiters):
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_pending:
            raise UpstreamOverloaded("circuit breaker: too many requests in flight and waiting")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s if timeout_s > 0 else None)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                waiter.cancel()
                self._remove(waiter)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("circuit breaker: no upstream slot freed in time") from None
            raise

    def release(self) -> None:
        """Give a slot back: to the first in line, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; in_flight is unchanged
                return
        self.in_flight -= 1

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def may_retry(self) -> bool:
        """Whether one more retry may start now (call :meth:`retry_done` after it)."""
        if self.retries >= self.max_retries:
            return False
        self.retries += 1
        return True

    def retry_done(self) -> None:
        self.retries -= 1


def take_retry(breaker: CircuitBreaker | None, retries: list[int]) -> bool:
    """Whether one more retry may start (``max_retries``); counts it in ``retries[0]``,
    for the caller to give back with :meth:`CircuitBreaker.retry_done`."""
    if breaker is None:
        return True
    if breaker.may_retry():
        retries[0] += 1
        return True
    return False
