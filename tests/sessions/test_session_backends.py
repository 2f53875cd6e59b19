"""Backend-specific behaviour: SQLite across processes, Redis down or restarted."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gatehouse.errors import ServiceUnavailable
from gatehouse.sessions.keys import SessionKeys
from gatehouse.sessions.manager import SessionManager
from gatehouse.sessions.model import Session
from gatehouse.sessions.redis import RedisStore
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from gatehouse.sessions.serialize import RecordCodec
    from gatehouse.sessions.sqlite import SQLiteStore

    async def main() -> None:
        store = SQLiteStore(sys.argv[1], RecordCodec(b"k" * 32))
        await store.start()
        won = 0
        for i in range(int(sys.argv[2])):
            won += await store.consume_once(f"code:{i}", 60)
        print(won)
        await store.close()

    asyncio.run(main())
    """
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sqlite_consume_once_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    n = 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(db), str(n)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [await asyncio.to_thread(p.communicate, None, 60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(out.strip()) for out, _ in outs) == n  # every code won exactly once


async def test_sqlite_invalidation_from_another_process(
    tmp_path: Path, records: RecordCodec
) -> None:
    db = tmp_path / "s.sqlite3"
    store = SQLiteStore(db, records, poll_interval_s=0.05)
    await store.start()
    seen: list[str | None] = []
    store.add_invalidation_listener(seen.append)
    script = textwrap.dedent(
        """
        import asyncio, sys
        from gatehouse.sessions.serialize import RecordCodec
        from gatehouse.sessions.sqlite import SQLiteStore
        async def main() -> None:
            store = SQLiteStore(sys.argv[1], RecordCodec(b"k" * 32))
            await store.delete("revoked-elsewhere")
            await store.close()
        asyncio.run(main())
        """
    )
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(db))
        assert await proc.wait() == 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while "revoked-elsewhere" not in seen:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
    finally:
        await store.close()


async def test_sqlite_unwritable_path_is_service_unavailable(
    tmp_path: Path, records: RecordCodec
) -> None:
    (tmp_path / "file").write_text("x")
    store = SQLiteStore(tmp_path / "file" / "s.sqlite3", records)  # parent is a file
    with pytest.raises(ServiceUnavailable):
        await store.get("x")
    with pytest.raises(ServiceUnavailable):
        await store.start()
    await store.close()
    with pytest.raises(ServiceUnavailable):
        await store.get("x")  # closed


async def test_redis_down_every_operation_is_service_unavailable(records: RecordCodec) -> None:
    store = RedisStore(f"redis://127.0.0.1:{closed_port()}/0", records)
    now = time.time()
    s = Session(id="x", user_id="u", issued_at=now, expires_at=now + 60)
    calls = [
        store.get("x"),
        store.put(s),
        store.replace(s),
        store.delete("x"),
        store.touch("x", now),
        store.consume_once("k", 5),
        store.acquire_lock("l", 5),
        store.release_lock("l", "t"),
    ]
    for call in calls:
        with pytest.raises(ServiceUnavailable) as info:
            await call
        assert info.value.status == 503
        assert info.value.__cause__ is not None
    with pytest.raises(ServiceUnavailable):
        await store.start()
    assert not store.subscribed
    await store.close()


async def test_redis_bad_password_is_service_unavailable(
    records: RecordCodec, redis_url: str
) -> None:
    store = RedisStore(redis_url.replace("redis://", "redis://nobody:wrong@"), records)
    with pytest.raises(ServiceUnavailable):
        await store.get("x")
    await store.close()


async def test_redis_resubscribes_and_flushes_after_connection_loss(
    records: RecordCodec, redis_url: str, redis_prefix: str
) -> None:
    import uuid

    import redis.asyncio as aioredis

    name = f"gh-test-{uuid.uuid4().hex[:12]}"
    store = RedisStore(
        redis_url,
        records,
        prefix=redis_prefix,
        client=aioredis.Redis.from_url(redis_url, client_name=name),
    )
    seen: list[str | None] = []
    store.add_invalidation_listener(seen.append)
    await store.start()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        # Kill only this test's subscriber connection (other users of this Redis are untouched).
        clients = await admin.client_list()
        ids = [c["id"] for c in clients if c.get("name") == name and "sub" in c.get("cmd", "")]
        assert ids
        for cid in ids:
            await admin.client_kill_filter(_id=cid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while None not in seen:  # "drop everything" once subscribed again
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        other = RedisStore(redis_url, records, prefix=redis_prefix)
        await other.delete("after-reconnect")
        await other.close()
        while "after-reconnect" not in seen:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
    finally:
        await admin.aclose()
        await store.close()


async def test_sqlite_revocation_holds_in_every_process_without_waiting_for_the_poll(
    tmp_path: Path, keys: SessionKeys, records: RecordCodec
) -> None:
    """Two managers on one file (as two workers): a sign-out through one is refused by the
    other at once, from its cache too, although neither polls within the test."""
    db = tmp_path / "s.sqlite3"
    a = SessionManager(store=SQLiteStore(db, records, poll_interval_s=3600), keys=keys)
    b = SessionManager(store=SQLiteStore(db, records, poll_interval_s=3600), keys=keys)
    await a.start()
    await b.start()
    try:
        session = await a.create(user_id="u")
        cookie = a.cookie_value(session, "app.example.com")
        assert (await b.load(cookie, "app.example.com")) is not None  # now cached in b
        assert b.load_cached(cookie, "app.example.com") == (True, b.cache.peek(session.id))
        await a.revoke(session.id)
        # b's cache still holds the record, but the stamp changed: no cached answer...
        assert b.cache.peek(session.id) is not None
        assert b.load_cached(cookie, "app.example.com") == (False, None)
        # ...and the store read that follows catches up first.
        assert await b.load(cookie, "app.example.com") is None
        assert b.cache.peek(session.id) is None
        # Caught up: the cached path answers without I/O again.
        other = await a.create(user_id="v")
        other_cookie = a.cookie_value(other, "app.example.com")
        assert await b.load(other_cookie, "app.example.com") is not None
        hit, cached = b.load_cached(other_cookie, "app.example.com")
        assert hit and cached is not None and cached.id == other.id
    finally:
        await a.close()
        await b.close()
