"""Fixtures for session tests: keys, and stores against the real backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gatehouse.sessions.keys import SessionKeys
from gatehouse.sessions.memory import MemoryStore
from gatehouse.sessions.redis import RedisStore
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore
from gatehouse.sessions.store import SessionStore

REDIS_URL = os.environ.get("GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

StoreFactory = Callable[[], Awaitable[SessionStore]]


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keys() -> SessionKeys:
    return SessionKeys.from_secret(b"k" * 32)


@pytest.fixture
def records(keys: SessionKeys) -> RecordCodec:
    return RecordCodec(keys.tokens)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix unique to the test; its keys are deleted afterwards."""
    prefix = f"gatehouse-test:{uuid.uuid4().hex}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(
    request: pytest.FixtureRequest, records: RecordCodec, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[StoreFactory]:
    """A factory of started stores of one kind, all sharing the same backing data."""
    kind = request.param
    made: list[SessionStore] = []
    shared_memory = MemoryStore(records)

    async def factory() -> SessionStore:
        store: SessionStore
        if kind == "memory":
            store = shared_memory  # one process: "another instance" is the same object
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / "sessions.sqlite3", records, poll_interval_s=0.05)
        else:
            store = RedisStore(REDIS_URL, records, prefix=redis_prefix)
        if store not in made:
            await store.start()
            made.append(store)
        return store

    factory.kind = kind  # type: ignore[attr-defined]
    yield factory
    for store in made:
        await store.close()
