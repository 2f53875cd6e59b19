"""Fixtures for session tests: keys, and stores against the real backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from gatehouse.sessions.keys import SessionKeys
from gatehouse.sessions.memory import MemoryStore
from gatehouse.sessions.postgres import PostgresStore
from gatehouse.sessions.redis import RedisStore
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore
from gatehouse.sessions.store import SessionStore

REDIS_URL = os.environ.get("GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "GATEHOUSE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)

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


@pytest.fixture
def postgres_url() -> str:
    return POSTGRES_URL


async def drop_postgres_tables(prefix: str) -> None:
    """Drop every table (and so its indexes) whose name starts with ``prefix``."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND starts_with(tablename, %s)",
            (prefix,),
        )
        for (name,) in await cur.fetchall():
            await conn.execute(
                psycopg.sql.SQL("DROP TABLE {}").format(psycopg.sql.Identifier(name))
            )


@pytest.fixture
async def postgres_prefix() -> AsyncIterator[str]:
    """A table prefix unique to the test; its tables are dropped afterwards."""
    prefix = f"gh_test_{uuid.uuid4().hex[:12]}_"
    yield prefix
    await drop_postgres_tables(prefix)


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def make_store(
    request: pytest.FixtureRequest,
    records: RecordCodec,
    tmp_path: Path,
    redis_prefix: str,
    postgres_prefix: str,
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
        elif kind == "redis":
            store = RedisStore(REDIS_URL, records, prefix=redis_prefix)
        else:
            # A long poll: what reaches other instances here comes by LISTEN/NOTIFY.
            store = PostgresStore(
                POSTGRES_URL, records, prefix=postgres_prefix, poll_interval_s=3600
            )
        if store not in made:
            await store.start()
            made.append(store)
        return store

    factory.kind = kind  # type: ignore[attr-defined]
    yield factory
    for store in made:
        await store.close()
