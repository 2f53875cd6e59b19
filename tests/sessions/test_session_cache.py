"""The per-process session cache: bounds, ages, single flight, invalidation races."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import tracemalloc
from types import MappingProxyType

import pytest

from gatehouse.errors import ServiceUnavailable
from gatehouse.sessions.cache import SessionCache
from gatehouse.sessions.model import Session
from gatehouse.sessions.sizing import session_bytes

pytestmark = pytest.mark.anyio


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.result: dict[str, Session | None] = {}

    async def __call__(self, session_id: str) -> Session | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.result.get(session_id)


def sess(sid: str) -> Session:
    return Session(id=sid, user_id="u", expires_at=1e12)


async def test_max_age_and_negative_age() -> None:
    t = [0.0]
    cache = SessionCache(max_age_s=5, negative_max_age_s=0.5, monotonic=lambda: t[0])
    load = Loader()
    load.result["a"] = sess("a")
    assert await cache.get("a", load) == sess("a")
    assert await cache.get("missing", load) is None
    assert load.calls == 2
    t[0] = 0.4
    await cache.get("a", load)
    await cache.get("missing", load)
    assert load.calls == 2
    t[0] = 1.0  # negative entry stale, positive still fresh
    await cache.get("a", load)
    await cache.get("missing", load)
    assert load.calls == 3
    t[0] = 6.0
    await cache.get("a", load)
    assert load.calls == 4


async def test_lru_bound_by_bytes() -> None:
    cache = SessionCache(max_bytes=3 * session_bytes(sess("a")))
    load = Loader()
    for sid in "abc":
        load.result[sid] = sess(sid)
        await cache.get(sid, load)
    await cache.get("a", load)  # a is now the most recently used
    load.result["d"] = sess("d")
    await cache.get("d", load)
    assert len(cache) == 3
    assert cache.peek("b") is None  # the least recently used went, only it
    assert all(cache.peek(sid) is not None for sid in "acd")
    assert cache.bytes_used <= 3 * session_bytes(sess("a"))
    cache.invalidate("a")
    assert cache.bytes_used == 2 * session_bytes(sess("a"))


def _idp_session(i: int, tokens: bool) -> Session:
    # As a store read builds it: claims decoded from JSON (their own key strings).
    claims = json.loads(
        json.dumps(
            {"sub": f"user-{i}", "email": f"user{i}@example.com", "name": f"User {i}",
             "groups": ["staff", "eng"], "email_verified": True, "iat": 1700000000,
             "exp": 1700003600, "aud": "client", "iss": "https://idp.example.com"}
        )
    )  # fmt: skip
    return Session(
        id=secrets.token_urlsafe(32),
        user_id=f"user-{i}",
        email=f"user{i}@example.com",
        name=f"User {i}",
        groups=("staff", "eng"),
        claims=MappingProxyType(claims),
        expires_at=1e12,
        id_token=secrets.token_urlsafe(700) if tokens else "",
        access_token=secrets.token_urlsafe(700) if tokens else "",
        refresh_token=secrets.token_urlsafe(40) if tokens else "",
    )


@pytest.mark.parametrize("tokens", [False, True])
def test_budget_matches_measured_memory(tokens: bool) -> None:
    """The bytes charged per session are what tracemalloc sees the cache keep alive, and
    a cache over budget stays within it, evicting one entry at a time."""
    n = 5000
    cache = SessionCache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            cache.put(_idp_session(i, tokens))
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.8 < cache.bytes_used / measured < 1.25, (cache.bytes_used / n, measured / n)
    small = SessionCache(max_bytes=cache.bytes_used // 2)
    for i in range(n):
        small.put(_idp_session(i, tokens))
    assert small.bytes_used <= cache.bytes_used // 2
    assert n * 0.45 < len(small) <= n * 0.5


async def test_single_flight_and_cancellation() -> None:
    cache = SessionCache()
    load = Loader()
    load.result["a"] = sess("a")
    load.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.get("a", load)) for _ in range(20)]
    await asyncio.sleep(0)
    tasks[0].cancel()  # one impatient request does not cancel the read for the others
    load.gate.set()
    results = await asyncio.gather(*tasks[1:])
    assert load.calls == 1
    assert all(r == sess("a") for r in results)


async def test_read_racing_an_invalidation_is_not_cached() -> None:
    cache = SessionCache()
    load = Loader()
    load.result["a"] = sess("a")  # the store's answer from before the sign-out
    load.gate = asyncio.Event()
    reader = asyncio.create_task(cache.get("a", load))
    await asyncio.sleep(0)
    cache.invalidate("a")  # sign-out arrives while the read is in flight
    load.gate.set()
    assert await reader == sess("a")
    assert cache.peek("a") is None  # ... but the stale answer is not kept


async def test_invalidate_all_rereads_every_session_from_the_store() -> None:
    cache = SessionCache()
    for sid in "abc":
        cache.put(sess(sid))
    cache.invalidate(None)
    reads: list[str] = []

    async def load(session_id: str) -> Session | None:
        reads.append(session_id)
        return None  # signed out while we were not listening

    for sid in "abc":
        assert await cache.get(sid, load) is None
    assert reads == ["a", "b", "c"]


async def test_invalidate_all_keeps_entries_for_the_outage_grace() -> None:
    """A flapping store: invalidations missed, then down again; the grace still applies."""
    cache = SessionCache(stale_grace_s=60)
    cache.put(sess("a"))
    cache.invalidate(None)

    async def down(session_id: str) -> Session | None:
        raise ServiceUnavailable("down")

    got = await cache.get("a", down)
    assert got is not None and got.id == "a"


async def test_store_error_without_cache_propagates() -> None:
    cache = SessionCache(stale_grace_s=60)

    async def down(session_id: str) -> Session | None:
        raise ServiceUnavailable("down")

    with pytest.raises(ServiceUnavailable):
        await cache.get("a", down)
    # concurrent waiters all see the error
    results = await asyncio.gather(
        *(cache.get("a", down) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ServiceUnavailable) for r in results)


async def test_other_sessions_invalidations_do_not_stop_caching() -> None:
    """A busy stream of other users' sign-outs must not keep a session out of the cache."""
    cache = SessionCache()
    release = asyncio.Event()
    reads: list[str] = []

    async def slow_load(session_id: str) -> Session | None:
        reads.append(session_id)
        await release.wait()
        return sess(session_id)

    pending = asyncio.ensure_future(cache.get("a", slow_load))
    await asyncio.sleep(0)
    cache.invalidate("someone-else")
    release.set()
    assert (await pending).id == "a"
    assert (await cache.get("a", slow_load)).id == "a"
    assert reads == ["a"]  # the second get was served from the cache


async def test_own_invalidation_during_a_read_is_not_cached() -> None:
    cache = SessionCache()
    release = asyncio.Event()
    reads: list[str] = []

    async def slow_load(session_id: str) -> Session | None:
        reads.append(session_id)
        await release.wait()
        return sess(session_id)

    pending = asyncio.ensure_future(cache.get("a", slow_load))
    await asyncio.sleep(0)
    cache.invalidate("a")  # signed out while we were reading the old record
    release.set()
    await pending
    release.set()
    await cache.get("a", slow_load)
    assert reads == ["a", "a"]  # re-read, not served from the stale read


async def test_options_size_and_age_the_cache() -> None:
    """``session_cache_max_bytes`` and ``session_cache_max_age`` reach the worker's cache:
    while the store's change feed is quiet, a record is served from it for the configured
    age, then read from the store again."""
    from gatehouse.config import load_text
    from gatehouse.sessions.manager import build_session_manager

    options = load_text(
        "insecure_server: true\ndatabroker_storage_type: memory\n"
        "session_cache_max_age: 30s\nsession_cache_max_bytes: 1048576\n",
        "<test>",
        env={},
    ).options
    t = [100.0]
    manager = build_session_manager(options)
    manager.cache._monotonic = lambda: t[0]  # the cache's clock only
    # A feed that has never confirmed anything (the memory store's is always current).
    manager.store.changes_confirmed_at = lambda: -math.inf  # type: ignore[method-assign]
    await manager.start()
    try:
        session = await manager.create(user_id="u", email="u@example.com")
        reads = 0
        real_get = manager.store.get

        async def counting_get(session_id: str) -> Session | None:
            nonlocal reads
            reads += 1
            return await real_get(session_id)

        manager.store.get = counting_get  # type: ignore[method-assign]
        t[0] += 29
        assert await manager.get(session.id) is not None and reads == 0
        t[0] += 2
        assert await manager.get(session.id) is not None and reads == 1
        assert manager.cache._max_bytes == 1048576
    finally:
        await manager.close()
