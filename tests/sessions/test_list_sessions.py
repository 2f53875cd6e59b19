"""Listing live sessions (the console's overview) against every backend that can."""

from __future__ import annotations

from dataclasses import replace

import pytest

from .test_session_stores import StoreFactory, make_session

pytestmark = pytest.mark.anyio


async def test_lists_live_sessions_most_recently_seen_first(make_store: StoreFactory) -> None:
    store = await make_store()
    if await store.list_sessions(10) is None:
        pytest.skip(f"{type(store).__name__} cannot list sessions (the console says so)")
    a, b, c = (make_session(f"list-{n}") for n in "abc")
    for s in (a, b, c):
        await store.put(replace(s, email=f"{s.id}@example.com"))
    now = a.issued_at
    await store.touch(a.id, now + 30)
    await store.touch(c.id, now + 20)
    await store.touch(b.id, now + 10)
    await store.put(replace(make_session("list-expired", ttl=-5), email="gone@example.com"))
    await store.delete(c.id)
    listed = await store.list_sessions(10)
    assert listed is not None
    ours = [s.id for s in listed if s.id.startswith("list-")]
    assert ours == [a.id, b.id]  # c deleted, the other expired; newest activity first
    assert listed[0].email == "list-a@example.com" and listed[0].refresh_token
    limited = await store.list_sessions(1)
    assert limited is not None and len(limited) == 1
