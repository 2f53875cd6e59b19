"""PostgreSQL-specific behaviour against the real server on 127.0.0.1:5432: schema, sweeping,
LISTEN/NOTIFY with its polling fallback, outages (closed port, dropped connections) and
recovery, and connection strings that never leak into errors or logs.

The contract every store shares is in ``test_session_stores.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from gatehouse.errors import ServiceUnavailable
from gatehouse.sessions.cache import SessionCache
from gatehouse.sessions.keys import SessionKeys
from gatehouse.sessions.manager import SessionManager
from gatehouse.sessions.model import Session
from gatehouse.sessions.postgres import PostgresStore, parse_conninfo
from gatehouse.sessions.serialize import RecordCodec
from support.loop import LoopThread
from support.relay import TcpRelay
from support.upstream import closed_port

from .conftest import POSTGRES_URL

pytestmark = pytest.mark.anyio


def session(sid: str, ttl: float = 3600) -> Session:
    now = time.time()
    return Session(id=sid, user_id="u", issued_at=now, expires_at=now + ttl, last_seen_at=now)


async def until(predicate: Callable[[], object], timeout: float = 3.0) -> float:
    """Poll ``predicate``; the seconds it took (fails after ``timeout``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)
    return loop.time() - start


async def admin(query: str, *args: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cur = await conn.execute(query.encode(), args or None)
        return await cur.fetchall() if cur.description else []


def url_named(name: str, port: int = 5432) -> str:
    """The test database, with ``application_name`` set so the test can find its backends."""
    return f"postgres://postgres@127.0.0.1:{port}/test?application_name={name}"


@pytest.fixture
async def stores(
    records: RecordCodec, postgres_prefix: str
) -> AsyncIterator[Callable[..., PostgresStore]]:
    """Factory of stores on the test's tables; every one is closed afterwards."""
    made: list[PostgresStore] = []

    def make(url: str = POSTGRES_URL, **kw: object) -> PostgresStore:
        store = PostgresStore(url, records, prefix=postgres_prefix, **kw)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_schema_is_versioned_and_concurrent_starts_agree(
    stores: Callable[..., PostgresStore], postgres_prefix: str
) -> None:
    many = [stores() for _ in range(4)]
    await asyncio.gather(*(s.start() for s in many))  # no "duplicate key" from racing CREATEs
    tables = {
        str(r[0])
        for r in await admin(
            "SELECT tablename FROM pg_tables WHERE starts_with(tablename, %s)", postgres_prefix
        )
    }
    assert tables == {f"{postgres_prefix}{t}_v1" for t in ("sessions", "once", "locks", "changes")}
    await many[0].put(session("a"))
    assert await many[3].get("a") is not None


async def test_sweep_deletes_expired_rows(
    stores: Callable[..., PostgresStore], postgres_prefix: str
) -> None:
    store = stores()
    await store.start()
    await store.put(session("old", ttl=0.05))
    await store.put(session("live"))
    await store.consume_once("k", 0.05)
    await asyncio.sleep(0.1)
    assert await store.get("old") is None  # expired rows are never returned, swept or not
    await store.sweep()
    rows = await admin(f'SELECT id FROM "{postgres_prefix}sessions_v1" ORDER BY id')
    assert rows == [("live",)]
    assert await admin(f'SELECT key FROM "{postgres_prefix}once_v1"') == []


async def test_notification_reaches_another_store_in_milliseconds(
    stores: Callable[..., PostgresStore],
) -> None:
    a, b = stores(poll_interval_s=3600), stores(poll_interval_s=3600)  # no poll: NOTIFY only
    await a.start()
    await b.start()
    seen: list[str | None] = []
    b.add_invalidation_listener(seen.append)
    await a.put(session("s1"))
    took = []
    for i in range(20):
        await a.delete("s1")
        took.append(await until(lambda n=i: len(seen) > n, timeout=1.0))
    assert seen == ["s1"] * 20  # each delivered once: the poll's read never repeats them
    assert sorted(took)[10] < 0.1, took


async def test_poll_delivers_when_notifications_do_not_arrive(
    stores: Callable[..., PostgresStore],
) -> None:
    a, b = stores(), stores(poll_interval_s=0.2)
    await a.start()
    await b.start()
    assert b._listener is not None
    b._listener.cancel()  # as behind a pooler that drops LISTEN: no notifications at all
    seen: list[str | None] = []
    b.add_invalidation_listener(seen.append)
    await a.delete("gone")
    assert await until(lambda: "gone" in seen, timeout=2.0) < 1.0


async def test_listener_and_pool_recover_from_dropped_connections(
    stores: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    name = f"gh-test-{uuid.uuid4().hex[:12]}"
    a, b = stores(), stores(url_named(name), poll_interval_s=3600)
    await a.start()
    await b.start()
    await b.put(session("s1"))
    await asyncio.gather(*(b.get("s1") for _ in range(12)))  # fill the pool
    seen: list[str | None] = []
    b.add_invalidation_listener(seen.append)
    # Every one of b's server connections dies (as in a PostgreSQL restart).
    killed = await admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )
    assert len(killed) >= 3  # the listener and several pooled connections
    # No call fails for it: each skips the dead connections, a one-shot key included
    # (and that one is used exactly once).
    assert await b.consume_once("k", 30) is True
    assert await a.consume_once("k", 30) is False
    assert await b.get("s1") is not None
    await until(lambda: b.listening, timeout=3.0)
    await a.delete("s1")
    await until(lambda: "s1" in seen, timeout=2.0)


async def test_closed_port_every_operation_is_service_unavailable(
    records: RecordCodec, caplog: pytest.LogCaptureFixture
) -> None:
    password = "hunter2-" + uuid.uuid4().hex  # must never be shown
    url = f"postgres://gatehouse:{password}@127.0.0.1:{closed_port()}/test"
    store = PostgresStore(url, records, prefix="gh_never_")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ServiceUnavailable) as info:
        await store.start()
    assert "refused" in str(info.value).lower()
    s = session("x")
    calls = [
        store.get("x"),
        store.put(s),
        store.replace(s),
        store.delete("x"),
        store.touch("x", time.time()),
        store.consume_once("k", 5),
        store.acquire_lock("l", 5),
        store.release_lock("l", "t"),
        store.list_sessions(10),
        store.ping(),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as info:
            await call
        assert time.monotonic() - started < 1  # known down: fails at once, holds no request
        assert info.value.status == 503
        assert info.value.__cause__ is not None
        assert password not in str(info.value)
    assert not store.listening
    await store.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert password not in text and password not in repr(store)
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) <= 1  # start() reported it; the listener does not repeat it


async def test_outage_and_recovery_through_a_relay(
    stores: Callable[..., PostgresStore],
    loop_thread: LoopThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = TcpRelay(loop_thread, 5432).start()
    try:
        store = stores(url_named("gh-relay", relay.port), poll_interval_s=0.2)
        await store.start()
        await store.put(session("s1"))
        caplog.set_level(logging.WARNING, logger="gatehouse.sessions")
        relay.stop()  # PostgreSQL gone: connections reset, new ones refused
        with pytest.raises(ServiceUnavailable):
            await store.get("s1")
        await until(lambda: not store.listening, timeout=8.0)
        relay.start()  # and back
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            try:
                assert await store.get("s1") is not None
                break
            except ServiceUnavailable:
                assert loop.time() < deadline, "no recovery within 15 s"
                await asyncio.sleep(0.1)
        await until(lambda: store.listening, timeout=5.0)
        messages = [r.getMessage() for r in caplog.records if r.name == "gatehouse.sessions"]
        assert sum("unreachable" in m for m in messages) == 1, messages
        assert sum("reachable again" in m for m in messages) == 1, messages
    finally:
        relay.stop()


async def test_revocation_holds_in_sibling_workers_at_once(
    stores: Callable[..., PostgresStore], keys: SessionKeys, tmp_path: Path
) -> None:
    """Two workers of one machine (one stamp file), neither polling nor listening: a
    sign-out through one is refused by the other as soon as it returned."""
    stamp = tmp_path / "stamp"
    sa, sb = (stores(poll_interval_s=3600, stamp_path=stamp) for _ in range(2))
    a, b = SessionManager(store=sa, keys=keys), SessionManager(store=sb, keys=keys)
    await a.start()
    await b.start()
    assert sb._listener is not None
    sb._listener.cancel()  # only the stamp may tell b
    try:
        s = await a.create(user_id="u")
        cookie = a.cookie_value(s, "app.example.com")
        assert await b.load(cookie, "app.example.com") is not None  # now cached in b
        await a.revoke(s.id)
        assert b.load_cached(cookie, "app.example.com") == (False, None)
        assert await b.load(cookie, "app.example.com") is None
    finally:
        await a.close()
        await b.close()


async def test_signed_in_requests_are_served_without_postgres_while_the_feed_confirms(
    stores: Callable[..., PostgresStore], keys: SessionKeys
) -> None:
    """Two replicas: once read, a session is answered from the cache by the synchronous
    hot path (no statement at all) well past ``session_cache_max_age``, because the change
    poll keeps confirming; a sign-out on the other replica still ends it (NOTIFY)."""
    sa, sb = (stores(poll_interval_s=0.02) for _ in range(2))
    a = SessionManager(store=sa, keys=keys)
    b = SessionManager(store=sb, keys=keys, cache=SessionCache(max_age_s=0.1))
    await a.start()
    await b.start()
    try:
        s = await a.create(user_id="u")
        cookie = a.cookie_value(s, "app.example.com")
        assert b.load_cached(cookie, "app.example.com") == (False, None)  # not read yet
        assert await b.load(cookie, "app.example.com") is not None
        started = time.monotonic()
        await until(lambda: time.monotonic() - started > 0.4)  # 4x the cache age
        for _ in range(50):
            hit, found = b.load_cached(cookie, "app.example.com")
            assert hit and found is not None and found.id == s.id
        await a.revoke(s.id)
        await until(lambda: b.load_cached(cookie, "app.example.com") != (True, found))
        assert await b.load(cookie, "app.example.com") is None
    finally:
        await a.close()
        await b.close()


def test_connection_strings_are_parsed_by_libpq_and_never_quoted() -> None:
    assert parse_conninfo("postgres://u:p@db.internal:6432/pomerium?sslmode=require") == {
        "user": "u",
        "password": "p",
        "host": "db.internal",
        "port": "6432",
        "dbname": "pomerium",
        "sslmode": "require",
    }
    assert parse_conninfo("host=db user=u dbname=x")["host"] == "db"
    for bad in ("postgres://u:s3cret@h/db?nonsense_option=1", "host=db password=s3cret oops", " "):
        with pytest.raises(ValueError) as info:
            parse_conninfo(bad)
        assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError):
        PostgresStore(POSTGRES_URL, RecordCodec(b"k" * 32), prefix="Robert'); DROP TABLE x;--")
