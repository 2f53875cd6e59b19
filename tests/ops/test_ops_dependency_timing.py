"""Every IdP and session-store call is timed and its failures counted (issue 7's metrics).

Real parts: an httpx client through gatehouse's timed transport to a live loopback server
and to a closed port; the timed store over a real SQLite store and over a Redis address
nobody listens on. The observer records what the metrics module would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gatehouse.authenticate import new_http_client
from gatehouse.errors import ServiceUnavailable
from gatehouse.observability.dependencies import OPERATION, TimedStore
from gatehouse.sessions.model import Session
from gatehouse.sessions.redis import RedisStore
from gatehouse.sessions.serialize import RecordCodec
from gatehouse.sessions.sqlite import SQLiteStore
from support.upstream import Upstream, closed_port

Call = tuple[str, str, float, bool]


def _recorder() -> tuple[list[Call], Callable[[str, str, float, bool], None]]:
    calls: list[Call] = []

    def observe(dependency: str, operation: str, seconds: float, ok: bool) -> None:
        calls.append((dependency, operation, seconds, ok))

    return calls, observe


def test_idp_calls_are_timed_by_operation_and_failures_counted(
    make_upstream: Callable[..., Upstream],
) -> None:
    upstream = make_upstream("idp")
    calls, observe = _recorder()

    async def run() -> None:
        client = new_http_client(observe=observe)
        try:
            ok = await client.get(f"{upstream.url}/token", extensions={OPERATION: "token"})
            assert ok.status_code == 200
            with pytest.raises(httpx.ConnectError):
                await client.get(
                    f"http://127.0.0.1:{closed_port()}/jwks", extensions={OPERATION: "jwks"}
                )
        finally:
            await client.aclose()

    asyncio.run(run())
    assert [(d, op, ok) for d, op, _, ok in calls] == [
        ("idp", "token", True),
        ("idp", "jwks", False),
    ]
    assert all(0 <= seconds < 10 for _, _, seconds, _ in calls)


def test_store_calls_are_timed_and_a_dead_store_counts_as_failed(tmp_path: Path) -> None:
    calls, observe = _recorder()
    records = RecordCodec(b"k" * 32)
    now = time.time()
    session = Session(id="sid-1", user_id="u", issued_at=now, expires_at=now + 60)

    async def run() -> None:
        store = TimedStore(SQLiteStore(tmp_path / "s.db", records), observe)
        await store.start()
        try:
            await store.put(session)
            got = await store.get("sid-1")
            assert got is not None and got.user_id == "u"
            await store.delete("sid-1")
            assert await store.get("sid-1") is None
        finally:
            await store.close()
        dead = TimedStore(
            RedisStore(f"redis://127.0.0.1:{closed_port()}/0", records), observe
        )
        with pytest.raises(ServiceUnavailable):
            await dead.get("sid-1")
        await dead.close()

    asyncio.run(run())
    summary = [(d, op, ok) for d, op, _, ok in calls if op != "start"]
    assert summary == [
        ("session_store", "put", True),
        ("session_store", "get", True),
        ("session_store", "delete", True),
        ("session_store", "get", True),
        ("session_store", "get", False),
    ]
