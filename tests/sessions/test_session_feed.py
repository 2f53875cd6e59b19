"""The change feed: a store's confirmation that every change reached its listeners, and the
cache that trusts its records while the confirmation is recent (issue 15, "Scale").

Against the real backends: a confirmation later than a change made by another instance
implies the change was delivered; with a live feed a cached record outlives
``session_cache_max_age`` without a store read; a feed that goes quiet (poller stopped, a
Redis that stops answering without closing the connection) makes records age out again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.errors import ServiceUnavailable
from gatehouse.sessions.cache import SessionCache
from gatehouse.sessions.keys import SessionKeys
from gatehouse.sessions.manager import SessionManager
from gatehouse.sessions.model import Session
from gatehouse.sessions.redis import FEED_PROBE_TIMEOUT_S, RedisStore
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore
from gatehouse.sessions.store import SessionStore
from ops.ops_helpers import RedisServer

from .test_session_stores import StoreFactory, make_session, until

pytestmark = pytest.mark.anyio


async def test_confirmation_implies_delivery(make_store: StoreFactory) -> None:
    """Once another instance's confirmation passes the moment a change committed, its
    listeners have that change: the promise the cache relies on."""
    a = await make_store()
    b = await make_store()
    seen: list[str | None] = []
    b.add_invalidation_listener(seen.append)
    s = make_session("feed-1")
    await a.put(s)
    await a.delete(s.id)
    committed = time.monotonic()
    await until(lambda: b.changes_confirmed_at() > committed, timeout=8.0)
    assert s.id in seen
    await a.put(s)
    assert await a.replace(s)
    replaced = time.monotonic()
    await until(lambda: b.changes_confirmed_at() > replaced, timeout=8.0)
    assert seen.count(s.id) >= 2


class CountingStore(SQLiteStore):
    """A real SQLite store that counts record reads."""

    reads = 0

    async def get(self, session_id: str) -> Session | None:
        self.reads += 1
        return await super().get(session_id)


@pytest.fixture
async def workers(tmp_path: Path, keys: SessionKeys) -> AsyncIterator[list[SessionManager]]:
    """Two managers on one SQLite file, as two workers of a machine (0.1 s cache age)."""
    made: list[SessionManager] = []

    async def make(clock: list[float]) -> SessionManager:
        store = CountingStore(
            tmp_path / "sessions.sqlite3",
            RecordCodec(keys.tokens),
            poll_interval_s=0.02,
            clock=lambda: clock[0],
        )
        manager = SessionManager(
            store=store,
            keys=keys,
            idle_timeout_s=100.0,
            cache=SessionCache(max_age_s=0.1),
            clock=lambda: clock[0],
        )
        await manager.start()
        made.append(manager)
        return manager

    clock = [time.time()]
    yield [await make(clock), await make(clock)]
    for manager in made:
        await manager.close()


def reads(manager: SessionManager) -> int:
    store = manager.store
    assert isinstance(store, CountingStore)
    return store.reads


async def test_live_feed_keeps_a_record_past_the_max_age(workers: list[SessionManager]) -> None:
    a, b = workers
    session = await a.create(user_id="u", email="u@example.com")
    assert await b.get(session.id) is not None
    assert reads(b) == 1
    # Well past the 0.1 s age, with the feed confirming every 20 ms: no second read.
    started = time.monotonic()
    await until(lambda: time.monotonic() - started > 0.3, timeout=2.0)
    for _ in range(20):
        assert await b.get(session.id) is not None
    assert reads(b) == 1
    # A sign-out on the other worker still holds at once (revocation stamp).
    await a.revoke(session.id)
    assert await b.get(session.id) is None


async def test_quiet_feed_ages_records_out(workers: list[SessionManager]) -> None:
    """A feed that stops confirming (its poller gone, as if the store were stuck) bounds a
    cached record's age by ``session_cache_max_age`` again."""
    a, b = workers
    session = await a.create(user_id="u", email="u@example.com")
    assert await b.get(session.id) is not None
    store = b.store
    assert isinstance(store, SQLiteStore) and store._poller is not None
    store._poller.cancel()
    quiet_since = time.monotonic()
    await until(lambda: time.monotonic() - quiet_since > 0.3, timeout=2.0)
    before = reads(b)
    assert await b.get(session.id) is not None
    assert reads(b) == before + 1


async def test_activity_elsewhere_is_read_before_calling_a_session_idle(
    tmp_path: Path, keys: SessionKeys
) -> None:
    """A worker whose cached record looks idle asks the store, where another worker's
    activity is recorded, instead of signing the user out."""
    clock = [1_000_000.0]
    managers = []
    for _ in range(2):
        store = CountingStore(
            tmp_path / "s.sqlite3",
            RecordCodec(keys.tokens),
            poll_interval_s=0.02,
            clock=lambda: clock[0],
        )
        manager = SessionManager(
            store=store, keys=keys, idle_timeout_s=100.0, clock=lambda: clock[0]
        )
        await manager.start()
        managers.append(manager)
    a, b = managers
    try:
        session = await a.create(user_id="u", email="u@example.com")
        assert await b.get(session.id) is not None  # cached in b with last_seen = start
        clock[0] += 90
        assert await a.get(session.id) is not None  # activity, written to the store
        await until(lambda: not a._background, timeout=2.0)
        clock[0] += 60  # 150 s after b's copy, 60 s after the activity on a
        cookie = b.cookie_value(session, "app.example.com")
        hit, _ = b.load_cached(cookie, "app.example.com")
        assert not hit  # looks idle from b's copy: not answered from the cache
        assert await b.load(cookie, "app.example.com") is not None
        clock[0] += 101  # now idle everywhere
        assert await b.get(session.id) is None
    finally:
        for manager in managers:
            await manager.close()


async def test_flush_withdraws_the_feeds_trust() -> None:
    t = [100.0]
    cache = SessionCache(max_age_s=5, monotonic=lambda: t[0])
    cache.follow(lambda: t[0])  # a feed that is always current
    cache.put(make_session("a"))
    t[0] += 60
    assert cache.lookup("a")[0]
    cache.invalidate(None)  # invalidations may have been missed
    assert not cache.lookup("a")[0]


async def test_outage_grace_counts_from_the_last_confirmation() -> None:
    """A record read long ago but confirmed by the feed until the store went down is
    served for ``stale_grace_s`` after that, not refused because of its read time."""
    t = [100.0]
    confirmed = [100.0]
    cache = SessionCache(max_age_s=5, stale_grace_s=60, monotonic=lambda: t[0])
    cache.follow(lambda: confirmed[0])
    s = make_session("a")
    cache.put(s)
    confirmed[0] = 1000.0  # read at 100, confirmed by the feed until 1000
    t[0] = 1010.0  # then the store went down: feed quiet for 10 s, the entry stale

    async def down(_sid: str) -> Session | None:
        raise ServiceUnavailable("down")

    assert await cache.get("a", down) is s
    t[0] = 1061.0  # beyond the grace
    with pytest.raises(ServiceUnavailable):
        await cache.get("a", down)


async def test_a_redis_that_stops_answering_stops_confirming(records: RecordCodec) -> None:
    """A subscription whose server stops answering without closing the connection (SIGSTOP
    stands in for a silent partition) stops confirming within the probe timeout; when it
    answers again, the store resubscribes and tells listeners to drop everything."""
    server = RedisServer().start()
    store: SessionStore = RedisStore(server.url, records)
    seen: list[str | None] = []
    store.add_invalidation_listener(seen.append)
    await store.start()
    try:
        mark = time.monotonic()
        await until(lambda: store.changes_confirmed_at() > mark, timeout=4.0)  # PONGs
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        await asyncio.sleep(FEED_PROBE_TIMEOUT_S + 1.5)
        assert store.changes_confirmed_at() < stopped
        os.kill(server.proc.pid, signal.SIGCONT)
        await until(lambda: None in seen, timeout=8.0)
        resumed = time.monotonic()
        await until(lambda: store.changes_confirmed_at() > resumed, timeout=4.0)
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        await store.close()
        server.kill()
