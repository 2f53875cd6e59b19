"""SessionManager: load/create/revoke, idle and absolute lifetime, refresh races, handoff."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from gatehouse.config import load_text
from gatehouse.errors import ConfigError, ServiceUnavailable
from gatehouse.sessions.cache import SessionCache
from gatehouse.sessions.keys import SessionKeys
from gatehouse.sessions.manager import SessionManager, build_session_manager
from gatehouse.sessions.memory import MemoryStore
from gatehouse.sessions.model import Session
from gatehouse.sessions.redis import RedisStore
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore
from gatehouse.sessions.store import SessionStore

pytestmark = pytest.mark.anyio

HOST = "app.example.com"
#: A sign-in binding hash (the browser that started the sign-in).
BIND = "b" * 43


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def managers(
    keys: SessionKeys, records: RecordCodec, redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[..., Awaitable[SessionManager]]]:
    made: list[SessionManager] = []

    async def make(store: SessionStore | None = None, **kw: object) -> SessionManager:
        store = store or RedisStore(redis_url, records, prefix=redis_prefix)
        m = SessionManager(store=store, keys=keys, cookie_expire_s=3600, **kw)  # type: ignore[arg-type]
        await m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        await m.close()


async def test_create_cookie_load(managers, records: RecordCodec) -> None:  # type: ignore[no-untyped-def]
    m = await managers(MemoryStore(records))
    groups = [f"cn=group-number-{i},ou=groups,dc=example,dc=com" for i in range(200)]
    s = await m.create(user_id="u1", email="u@example.com", groups=groups, refresh_token="r")
    cookie = m.cookie_value(s, HOST)
    assert len(cookie) < 1024 and len(f"_gatehouse={cookie}") < 200  # groups live in the store
    loaded = await m.load(cookie, HOST)
    assert loaded is not None and loaded.id == s.id and len(loaded.groups) == 200
    assert await m.load(cookie, "other.example.com") is None
    assert await m.load("garbage", HOST) is None
    assert await m.load(cookie[:-2], HOST) is None
    assert 3590 <= m.cookie_max_age(s) <= 3600


async def test_absolute_lifetime(managers, records: RecordCodec) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    m = await managers(MemoryStore(records, clock=clock), clock=clock)
    s = await m.create(user_id="u")
    cookie = m.cookie_value(s, HOST)
    clock.now += 3599
    assert await m.load(cookie, HOST) is not None
    clock.now += 2
    assert await m.load(cookie, HOST) is None


async def test_idle_timeout(managers, records: RecordCodec) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    store = MemoryStore(records, clock=clock)
    m = await managers(store, clock=clock, idle_timeout_s=100)
    s = await m.create(user_id="u")
    cookie = m.cookie_value(s, HOST)
    for _ in range(5):  # activity keeps it alive well past the idle timeout
        clock.now += 90
        assert await m.load(cookie, HOST) is not None
    await asyncio.sleep(0)  # let the background touch land
    got = await store.get(s.id)
    assert got is not None and got.last_seen_at == clock.now
    clock.now += 101
    assert await m.load(cookie, HOST) is None


async def test_cookie_domain_binds_to_domain(managers, records: RecordCodec) -> None:  # type: ignore[no-untyped-def]
    m = await managers(MemoryStore(records), cookie_domain=".example.com")
    s = await m.create(user_id="u")
    cookie = m.cookie_value(s, "a.example.com")
    assert await m.load(cookie, "b.example.com") is not None
    assert await m.load(cookie, "example.org") is None


async def test_revoke_across_managers_on_redis_within_a_second(managers) -> None:  # type: ignore[no-untyped-def]
    a = await managers()
    b = await managers()
    s = await a.create(user_id="u")
    cookie = a.cookie_value(s, HOST)
    assert await b.load(cookie, HOST) is not None  # created on one replica, works on another
    assert b.cache.peek(s.id) is not None
    t0 = time.monotonic()
    await a.revoke(s.id)
    assert await a.load(cookie, HOST) is None
    while b.cache.peek(s.id) is not None:
        assert time.monotonic() - t0 < 1.0
        await asyncio.sleep(0.01)
    assert await b.load(cookie, HOST) is None


async def test_revoke_across_managers_on_sqlite(managers, records, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = await managers(SQLiteStore(tmp_path / "s.db", records, poll_interval_s=0.1))
    b = await managers(SQLiteStore(tmp_path / "s.db", records, poll_interval_s=0.1))
    s = await a.create(user_id="u")
    cookie = a.cookie_value(s, HOST)
    assert await b.load(cookie, HOST) is not None
    await a.revoke(s.id)
    t0 = time.monotonic()
    while b.cache.peek(s.id) is not None:
        assert time.monotonic() - t0 < 1.0
        await asyncio.sleep(0.01)
    assert await b.load(cookie, HOST) is None


def refresher_counting(calls: list[str], delay: float = 0.05, fail: bool = False):  # type: ignore[no-untyped-def]
    async def refresh(session: Session) -> Session:
        calls.append(session.id)
        await asyncio.sleep(delay)
        if fail:
            raise RuntimeError("invalid_grant")
        return replace(
            session, access_token=f"new-{len(calls)}", tokens_expire_at=time.time() + 3600
        )

    return refresh


async def expiring(m: SessionManager) -> Session:
    return await m.create(user_id="u", refresh_token="r", tokens_expire_at=time.time() + 10)


async def test_refresh_once_for_many_concurrent_requests(managers, records) -> None:  # type: ignore[no-untyped-def]
    m = await managers(MemoryStore(records))
    s = await expiring(m)
    calls: list[str] = []
    results = await asyncio.gather(
        *(m.refresh_if_needed(s, refresher_counting(calls)) for _ in range(100))
    )
    assert calls == [s.id]
    assert {r.access_token for r in results if r} == {"new-1"}
    loaded = await m.get(s.id)
    assert loaded is not None and loaded.access_token == "new-1"
    assert loaded.expires_at == s.expires_at  # a refresh never extends the absolute lifetime
    # no refresh when not needed
    assert await m.refresh_if_needed(loaded, refresher_counting(calls)) is loaded
    assert len(calls) == 1


async def test_refresh_once_across_two_managers_on_redis(managers) -> None:  # type: ignore[no-untyped-def]
    a = await managers()
    b = await managers()
    s = await expiring(a)
    calls: list[str] = []
    results = await asyncio.gather(
        *(m.refresh_if_needed(s, refresher_counting(calls, delay=0.2)) for m in [a, b] * 20)
    )
    assert calls == [s.id]
    assert all(r is not None and r.access_token == "new-1" for r in results)


async def test_failed_refresh_ends_session(managers, records) -> None:  # type: ignore[no-untyped-def]
    m = await managers(MemoryStore(records))
    s = await expiring(m)
    cookie = m.cookie_value(s, HOST)
    calls: list[str] = []
    results = await asyncio.gather(
        *(m.refresh_if_needed(s, refresher_counting(calls, fail=True)) for _ in range(10))
    )
    assert results == [None] * 10 and len(calls) == 1
    assert await m.load(cookie, HOST) is None


async def test_refresh_does_not_resurrect_revoked_session(managers, records) -> None:  # type: ignore[no-untyped-def]
    m = await managers(MemoryStore(records))
    s = await expiring(m)

    async def slow(session: Session) -> Session:
        await m.revoke(session.id)  # sign-out lands while the IdP is answering
        return replace(session, tokens_expire_at=time.time() + 3600)

    assert await m.refresh_if_needed(s, slow) is None
    assert await m.get(s.id) is None


async def test_handoff_single_use(managers) -> None:  # type: ignore[no-untyped-def]
    a = await managers()  # authenticate host's replica
    b = await managers()  # route host's replica
    s = await a.create(user_id="u")
    token = a.issue_handoff(s.id, HOST, BIND)
    assert await b.redeem_handoff(token, "evil.example.com", BIND) is None
    assert await b.redeem_handoff(token, HOST, "x" * 43) is None  # another browser
    results = await asyncio.gather(*(m.redeem_handoff(token, HOST, BIND) for m in [a, b] * 5))
    assert [r.id for r in results if r is not None] == [s.id]
    assert await b.redeem_handoff(token, HOST, BIND) is None
    await a.revoke(s.id)
    assert await b.redeem_handoff(a.issue_handoff(s.id, HOST, BIND), HOST, BIND) is None


async def test_cache_serves_hot_path_without_store(managers, records) -> None:  # type: ignore[no-untyped-def]
    store = MemoryStore(records)
    m = await managers(store)
    s = await m.create(user_id="u")
    cookie = m.cookie_value(s, HOST)
    reads = 0
    original = store.get

    async def counting_get(session_id: str) -> Session | None:
        nonlocal reads
        reads += 1
        return await original(session_id)

    store.get = counting_get  # type: ignore[method-assign]
    for _ in range(100):
        assert await m.load(cookie, HOST) is not None
    assert reads == 0


async def test_store_down_cached_sessions_keep_working_briefly(  # type: ignore[no-untyped-def]
    managers, records, redis_url: str, redis_prefix: str
) -> None:
    t = [0.0]
    store = RedisStore(redis_url, records, prefix=redis_prefix)
    cache = SessionCache(max_age_s=1, stale_grace_s=30, monotonic=lambda: t[0])
    # On the cache's clock, the outage (feed quiet too) begins at 0.
    store.changes_confirmed_at = lambda: 0.0  # type: ignore[method-assign]
    m = await managers(store, cache=cache)
    s = await m.create(user_id="u")
    cookie = m.cookie_value(s, HOST)
    other = await m.create(user_id="v")
    cache.invalidate(other.id)  # not cached here

    async def down(session_id: str) -> Session | None:
        raise ServiceUnavailable("down")

    store.get = down  # type: ignore[method-assign]
    t[0] = 5  # past max age: must ask the store, which is down
    assert (await m.load(cookie, HOST)) is not None  # within grace: served from cache
    with pytest.raises(ServiceUnavailable):
        await m.load(m.cookie_value(other, HOST), HOST)  # not cached: 503, not a crash
    t[0] = 31
    with pytest.raises(ServiceUnavailable):
        await m.load(cookie, HOST)  # grace over: fail closed


async def test_manager_on_closed_redis_port(keys: SessionKeys, records: RecordCodec) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    m = SessionManager(store=RedisStore(f"redis://127.0.0.1:{port}", records), keys=keys)
    with pytest.raises(ServiceUnavailable):
        await m.start()
    cookie = m.cookie_value("some-session-id", HOST)
    with pytest.raises(ServiceUnavailable):
        await m.load(cookie, HOST)
    with pytest.raises(ServiceUnavailable):
        await m.create(user_id="u")
    with pytest.raises(ServiceUnavailable):
        await m.revoke("x")
    with pytest.raises(ServiceUnavailable):
        await m.redeem_handoff(m.issue_handoff("x", HOST, BIND), HOST, BIND)
    assert await m.load("junk", HOST) is None  # bad cookies never reach the store
    await m.close()


BASE = "insecure_server: true\naddress: ':8080'\n"


async def test_build_session_manager(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    opts = load_text(BASE + f"data_dir: {data}\n", env={}).options
    m = build_session_manager(opts)
    assert isinstance(m.store, SQLiteStore)
    await m.start()
    s = await m.create(user_id="u")
    await m.close()
    # a restart (new manager, generated secret persisted in data_dir) still finds the session
    m2 = build_session_manager(opts)
    await m2.start()
    assert await m2.load(m.cookie_value(s, HOST), HOST) is not None
    await m2.close()
    assert (data / "cookie_secret").exists()

    secret = "A" * 43 + "="
    mem = load_text(BASE + f"databroker_storage_type: memory\ncookie_secret: '{secret}'\n", env={})
    assert isinstance(build_session_manager(mem.options).store, MemoryStore)
    red = load_text(
        BASE + f"databroker_storage_type: redis\ncookie_secret: '{secret}'\n"
        f"databroker_storage_connection_string: {redis_url}\ncookie_expire: 1h\n",
        env={},
    )
    rm = build_session_manager(red.options)
    assert isinstance(rm.store, RedisStore) and rm.cookie_expire_s == 3600
    await rm.store.close()
    for bad in [
        "databroker_storage_type: redis\n",  # no secret
        f"databroker_storage_type: redis\ncookie_secret: '{secret}'\n",  # no URL
        "cookie_secret: not-base64-of-32-bytes\n",
    ]:
        with pytest.raises(ConfigError):
            build_session_manager(load_text(BASE + bad, env={}).options)


async def test_idp_unreachable_keeps_session_until_tokens_expire(managers, records) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    m = await managers(MemoryStore(records, clock=clock), clock=clock)
    s = await m.create(user_id="u", refresh_token="r", tokens_expire_at=clock.now + 10)

    async def unreachable(session: Session) -> Session:
        raise ServiceUnavailable("idp down")

    kept = await m.refresh_if_needed(s, unreachable)  # within skew: carry on
    assert kept is not None and kept.id == s.id and kept.refresh_token == "r"
    clock.now += 11
    with pytest.raises(ServiceUnavailable):
        await m.refresh_if_needed(s, unreachable)
    assert await m.get(s.id) is not None  # not signed out by an IdP outage
