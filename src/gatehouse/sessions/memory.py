"""In-process session store, for tests and single-process development.

Nothing survives a restart and nothing is shared between processes. Invalidations are
delivered synchronously to listeners in this process.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

from .model import Session
from .serialize import RecordCodec
from .store import SessionStore


class MemoryStore(SessionStore):
    """A dict-backed :class:`SessionStore`; records are serialized like the others."""

    def __init__(self, records: RecordCodec, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(records)
        self._clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}  # id -> (record, expires_at)
        self._seen: dict[str, float] = {}
        self._once: dict[str, float] = {}
        self._locks: dict[str, tuple[str, float]] = {}

    def changes_confirmed_at(self) -> float:
        # Every change is delivered synchronously, in this one process: always current.
        return math.inf

    async def get(self, session_id: str) -> Session | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._drop(session_id)
            return None
        return self._decode(entry[0], self._seen.get(session_id, 0.0))

    async def put(self, session: Session) -> None:
        self._sessions[session.id] = (self._records.dumps(session), session.expires_at)
        if session.last_seen_at:
            await self.touch(session.id, session.last_seen_at)

    async def replace(self, session: Session) -> bool:
        if await self.get(session.id) is None:
            return False
        await self.put(session)
        self._notify(session.id)
        return True

    async def delete(self, session_id: str) -> None:
        self._drop(session_id)
        self._notify(session_id)

    async def list_sessions(self, limit: int) -> list[Session] | None:
        now = self._clock()
        live = [i for i, (_, expires) in self._sessions.items() if now < expires]
        live.sort(key=lambda i: self._seen.get(i, 0.0), reverse=True)
        found = [self._decode(self._sessions[i][0], self._seen.get(i, 0.0)) for i in live[:limit]]
        return [s for s in found if s is not None]

    async def touch(self, session_id: str, at: float) -> None:
        if session_id in self._sessions:
            self._seen[session_id] = max(at, self._seen.get(session_id, 0.0))

    async def consume_once(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        self._prune(now)
        if self._once.get(key, 0.0) > now:
            return False
        self._once[key] = now + ttl_s
        return True

    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        now = self._clock()
        held = self._locks.get(name)
        if held is not None and held[1] > now:
            return None
        token = secrets.token_urlsafe(16)
        self._locks[name] = (token, now + ttl_s)
        return token

    async def release_lock(self, name: str, token: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == token:
            del self._locks[name]

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._seen.pop(session_id, None)

    def _prune(self, now: float) -> None:
        if len(self._once) > 10_000:
            self._once = {k: t for k, t in self._once.items() if t > now}
