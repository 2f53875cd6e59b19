"""The SQLite store's direct path: sign-in writes on the event loop's own connection.

What must hold: a write another connection has locked waits for it (on the worker thread)
instead of failing or slipping past it, so single use stays single use; the WAL stays
small under a stream of direct writes; a closed store refuses writes as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.errors import ServiceUnavailable
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore

from .test_session_stores import make_session

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path, records: RecordCodec) -> AsyncIterator[SQLiteStore]:
    made = SQLiteStore(tmp_path / "sessions.sqlite3", records, poll_interval_s=0.05)
    await made.start()
    yield made
    await made.close()


async def test_a_locked_write_waits_for_the_lock_holder(store: SQLiteStore) -> None:
    # Another process's transaction holds the write lock and spends the same key.
    other = sqlite3.connect(store._path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO once_keys(key, expires_at) VALUES('state:x', 9e18)")
    asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")
    # Both wait for the commit: the spent key is refused, a new one is accepted once.
    spent, fresh = await asyncio.gather(
        store.consume_once("state:x", 600), store.consume_once("state:y", 600)
    )
    assert (spent, fresh) == (False, True)
    assert await store.consume_once("state:y", 600) is False
    other.close()


async def test_a_session_written_while_locked_is_stored(store: SQLiteStore) -> None:
    other = sqlite3.connect(store._path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")
    session = make_session("sid-locked")
    await store.put(session)
    got = await store.get(session.id)
    assert got is not None and got.refresh_token == session.refresh_token
    other.close()


async def test_direct_writes_keep_the_wal_small(store: SQLiteStore, tmp_path: Path) -> None:
    for i in range(3000):
        assert await store.consume_once(f"state:{i}", 600) is True
        await asyncio.sleep(0)  # as between requests: checkpoints get their turn
    wal = tmp_path / "sessions.sqlite3-wal"
    # Without checkpoints each commit appends two 4 KiB pages: 24 MiB for these.
    assert wal.stat().st_size < 6 * 1024 * 1024
    assert await store.consume_once("state:0", 600) is False
    assert store._direct_commits > 2900  # nearly all went the direct way


async def test_a_closed_store_refuses_writes(tmp_path: Path, records: RecordCodec) -> None:
    made = SQLiteStore(tmp_path / "sessions.sqlite3", records)
    await made.start()
    assert await made.consume_once("k", 60) is True
    await made.close()
    with pytest.raises(ServiceUnavailable):
        await made.consume_once("k2", 60)
    with pytest.raises(ServiceUnavailable):
        await made.put(make_session())
