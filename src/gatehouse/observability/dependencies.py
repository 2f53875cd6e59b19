"""Latency and errors of every call gatehouse makes to its dependencies: the IdP and the
session store.

Both are measured at the boundary, so no call site can forget: IdP calls by an httpx
transport wrapper (:class:`~gatehouse.authenticate.http_client.TimedTransport`, beside the
IdP client, so that a config without sign-in never imports httpx; the caller names the
operation in the request's ``extensions``), store calls by a delegating store
(:class:`TimedStore`). Each call is
reported to an :data:`Observer` as ``(dependency, operation, seconds, ok)``; the metrics
module turns that into ``gatehouse_dependency_duration_seconds`` and
``gatehouse_dependency_call_errors_total``. Without ``metrics_address`` nothing is wrapped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..sessions.model import Session
from ..sessions.stamp import SharedStamp
from ..sessions.store import InvalidationListener, SessionStore

#: ``(dependency, operation, seconds, ok)``.
Observer = Callable[[str, str, float, bool], None]

#: The request extension naming an IdP call (``discovery``, ``jwks``, ``token``...).
OPERATION = "gatehouse_operation"

T = TypeVar("T")


class TimedStore(SessionStore):
    """A session store that reports each call's duration and outcome, then delegates."""

    def __init__(self, inner: SessionStore, observe: Observer) -> None:
        # No super().__init__: records and listeners belong to the inner store.
        self.inner = inner
        self._observe = observe

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            result = await call
        except BaseException:
            self._observe("session_store", operation, time.monotonic() - started, False)
            raise
        self._observe("session_store", operation, time.monotonic() - started, True)
        return result

    async def start(self) -> None:
        await self._timed("start", self.inner.start())

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self._timed("ping", self.inner.ping())

    async def get(self, session_id: str) -> Session | None:
        return await self._timed("get", self.inner.get(session_id))

    async def put(self, session: Session) -> None:
        await self._timed("put", self.inner.put(session))

    async def replace(self, session: Session) -> bool:
        return await self._timed("replace", self.inner.replace(session))

    async def delete(self, session_id: str) -> None:
        await self._timed("delete", self.inner.delete(session_id))

    async def touch(self, session_id: str, at: float) -> None:
        await self._timed("touch", self.inner.touch(session_id, at))

    async def list_sessions(self, limit: int) -> list[Session] | None:
        return await self._timed("list_sessions", self.inner.list_sessions(limit))

    async def consume_once(self, key: str, ttl_s: float) -> bool:
        return await self._timed("consume_once", self.inner.consume_once(key, ttl_s))

    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        return await self._timed("acquire_lock", self.inner.acquire_lock(name, ttl_s))

    async def release_lock(self, name: str, token: str) -> None:
        await self._timed("release_lock", self.inner.release_lock(name, token))

    def revocation_stamp(self) -> SharedStamp | None:
        return self.inner.revocation_stamp()

    async def catch_up(self) -> None:
        await self._timed("catch_up", self.inner.catch_up())

    def changes_confirmed_at(self) -> float:
        return self.inner.changes_confirmed_at()

    def add_invalidation_listener(self, listener: InvalidationListener) -> None:
        self.inner.add_invalidation_listener(listener)

    def remove_invalidation_listener(self, listener: InvalidationListener) -> None:
        self.inner.remove_invalidation_listener(listener)

    def __getattr__(self, name: str) -> Any:
        # Store-specific extras (e.g. SQLite's poll_changes) pass through untimed.
        return getattr(self.inner, name)
