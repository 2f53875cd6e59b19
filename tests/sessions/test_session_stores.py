"""The store contract against every backend (memory, SQLite file, real Redis, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import psycopg
import pytest
import redis.asyncio as aioredis

from gatehouse.sessions.model import Session
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.store import SessionStore

StoreFactory = Callable[[], Awaitable[SessionStore]]

pytestmark = pytest.mark.anyio


def make_session(sid: str = "sid-1", *, ttl: float = 3600, groups: int = 3) -> Session:
    now = time.time()
    return Session(
        id=sid,
        user_id="user-1",
        email="u@example.com",
        name="U",
        groups=tuple(f"group-{i}" for i in range(groups)),
        claims=MappingProxyType({"sub": "user-1", "nested": {"a": [1, 2]}}),
        issued_at=now,
        expires_at=now + ttl,
        last_refresh_at=now,
        tokens_expire_at=now + 300,
        id_token="ID-TOKEN-SECRET",
        access_token="ACCESS-TOKEN-SECRET",
        refresh_token="REFRESH-TOKEN-SECRET",
    )


async def until(predicate, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_put_get_roundtrip(make_store: StoreFactory) -> None:
    store = await make_store()
    s = make_session()
    assert await store.get(s.id) is None
    await store.put(s)
    got = await store.get(s.id)
    assert got is not None
    assert got.id == s.id and got.groups == s.groups and got.refresh_token == s.refresh_token
    assert dict(got.claims) == {"sub": "user-1", "nested": {"a": [1, 2]}}
    other = await make_store()  # another connection / process view of the same data
    assert await other.get(s.id) == got


async def test_replace_and_delete(make_store: StoreFactory) -> None:
    store = await make_store()
    s = make_session()
    assert await store.replace(s) is False  # never creates
    assert await store.get(s.id) is None
    await store.put(s)
    newer = replace(s, access_token="NEW")
    assert await store.replace(newer) is True
    got = await store.get(s.id)
    assert got is not None and got.access_token == "NEW"
    await store.delete(s.id)
    assert await store.get(s.id) is None
    assert await store.replace(newer) is False  # a refresh cannot resurrect a revoked session


async def test_touch_is_kept_apart_from_record(make_store: StoreFactory) -> None:
    store = await make_store()
    s = make_session()
    await store.touch(s.id, 123.0)  # no record: no effect
    await store.put(s)
    await store.touch(s.id, s.issued_at + 50)
    await store.touch(s.id, s.issued_at + 10)  # never goes backwards
    got = await store.get(s.id)
    assert got is not None and got.last_seen_at == s.issued_at + 50
    assert await store.replace(s)  # rewriting the record keeps the activity time
    got = await store.get(s.id)
    assert got is not None and got.last_seen_at == s.issued_at + 50


async def test_expired_record_is_gone(make_store: StoreFactory) -> None:
    store = await make_store()
    s = make_session(ttl=0.3)
    await store.put(s)
    assert await store.get(s.id) is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while await store.get(s.id) is not None:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


async def test_consume_once_is_atomic(make_store: StoreFactory) -> None:
    a = await make_store()
    b = await make_store()
    results = await asyncio.gather(*(store.consume_once("state:abc", 30) for store in [a, b] * 25))
    assert results.count(True) == 1
    assert await a.consume_once("state:other", 30) is True


async def test_consume_once_expires(make_store: StoreFactory) -> None:
    store = await make_store()
    assert await store.consume_once("k", 0.2)
    assert not await store.consume_once("k", 0.2)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while not await store.consume_once("k", 0.2):
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


async def test_lock(make_store: StoreFactory) -> None:
    a = await make_store()
    b = await make_store()
    tokens = await asyncio.gather(*(s.acquire_lock("refresh:x", 5) for s in [a, b] * 10))
    held = [t for t in tokens if t is not None]
    assert len(held) == 1
    await b.release_lock("refresh:x", "not-the-token")  # only the holder can release
    assert await a.acquire_lock("refresh:x", 5) is None
    await a.release_lock("refresh:x", held[0])
    token = await b.acquire_lock("refresh:x", 0.2)
    assert token is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while await a.acquire_lock("refresh:x", 5) is None:  # an expired lease can be taken
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


async def test_invalidation_reaches_other_instances(make_store: StoreFactory) -> None:
    a = await make_store()
    b = await make_store()
    seen_a: list[str | None] = []
    seen_b: list[str | None] = []
    a.add_invalidation_listener(seen_a.append)
    b.add_invalidation_listener(seen_b.append)
    s = make_session()
    await a.put(s)
    await a.delete(s.id)
    assert s.id in seen_a  # local effect is immediate
    await until(lambda: s.id in seen_b, timeout=1.0)
    await b.put(s)
    assert await b.replace(s)
    await until(lambda: seen_a.count(s.id) >= 2, timeout=1.0)


async def test_unreadable_record_is_no_session(make_store: StoreFactory) -> None:
    store = await make_store()
    s = make_session()
    await store.put(s)
    # The same data read with another secret (e.g. a replica with a different cookie_secret).
    store._records = RecordCodec(b"x" * 32)
    assert await store.get(s.id) is None


async def test_tokens_encrypted_at_rest(
    make_store: StoreFactory, tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    store = await make_store()
    await store.put(make_session())
    kind = make_store.kind  # type: ignore[attr-defined]
    if kind == "sqlite":
        blob = b"".join(p.read_bytes() for p in tmp_path.glob("sessions.sqlite3*"))
    elif kind == "redis":
        client = aioredis.Redis.from_url(redis_url)
        try:
            raw = await client.get(f"{store._prefix}s:sid-1")  # type: ignore[attr-defined]
            blob = raw if isinstance(raw, bytes) else b""
        finally:
            await client.aclose()
    elif kind == "postgres":
        table = psycopg.sql.Identifier(f"{store._prefix}sessions_v1")  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            cur = await conn.execute(
                psycopg.sql.SQL("SELECT record FROM {} WHERE id = 'sid-1'").format(table)
            )
            row = await cur.fetchone()
        blob = str(row[0]).encode() if row else b""
    else:
        blob = store._sessions["sid-1"][0].encode()  # type: ignore[attr-defined]
    assert b"user-1" in blob
    for secret in (b"ID-TOKEN-SECRET", b"ACCESS-TOKEN-SECRET", b"REFRESH-TOKEN-SECRET"):
        assert secret not in blob
