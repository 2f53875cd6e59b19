"""Short-lived state of the built-in IdP: codes, tokens, sign-in transactions, throttles.

Everything the provider remembers between requests goes through :class:`StateStore`, a
three-call async interface (``put``, ``get``, ``take``) over string keys and string values
with a time to live. ``take`` is an atomic get-and-delete: that is what makes an
authorization code or a refresh token single-use even when two workers race to redeem it.

Two implementations:

- :class:`MemoryStateStore`: one process (tests, a single worker).
- :class:`SQLiteStateStore`: one file shared by every worker process of a machine (WAL
  journal, busy timeout, each operation one statement). Blocking calls run in a thread
  (``asyncio.to_thread``) so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from ..errors import ServiceUnavailable

#: How long a statement waits for another process's write lock before failing (ms).
BUSY_TIMEOUT_MS = 5000
#: How often expired rows are purged (seconds); expiry itself is checked on every read.
PURGE_INTERVAL_S = 60.0


class StateStore(ABC):
    """Key/value state with expiry, shared by the workers that serve one issuer."""

    @abstractmethod
    async def put(self, key: str, value: str, ttl_s: float) -> None:
        """Store ``value`` under ``key`` (replacing any) for ``ttl_s`` seconds."""

    @abstractmethod
    async def get(self, key: str) -> str | None:
        """The live value under ``key``, or ``None``."""

    @abstractmethod
    async def take(self, key: str) -> str | None:
        """Atomically read and delete ``key``; ``None`` if absent or expired.

        Of two concurrent ``take`` calls for one key, at most one gets the value.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release resources."""


class MemoryStateStore(StateStore):
    """A per-process dict; expired entries are dropped lazily and by an occasional sweep."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._clock = clock
        self._next_purge = clock() + PURGE_INTERVAL_S

    def _purge(self, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        for k in [k for k, (_, exp) in self._data.items() if exp <= now]:
            del self._data[k]

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        now = self._clock()
        self._purge(now)
        self._data[key] = (value, now + ttl_s)

    async def get(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None or item[1] <= self._clock():
            return None
        return item[0]

    async def take(self, key: str) -> str | None:
        # No await between the read and the delete: atomic on one event loop.
        item = self._data.pop(key, None)
        if item is None or item[1] <= self._clock():
            return None
        return item[0]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS idp_state(
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS idp_state_expires ON idp_state(expires_at);
"""


class SQLiteStateStore(StateStore):
    """State in a SQLite file, so several worker processes see the same codes and tokens.

    One connection per store, used under a lock from ``asyncio.to_thread`` workers.
    ``take`` is a single ``DELETE ... RETURNING`` statement, atomic across processes.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._next_purge = 0.0
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise ServiceUnavailable("IdP state store is closed")
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection, float], str | None]) -> str | None:
        def call() -> str | None:
            with self._lock:
                conn = self._connect()
                now = self._clock()
                result = fn(conn, now)
                if now >= self._next_purge:
                    self._next_purge = now + PURGE_INTERVAL_S
                    conn.execute("DELETE FROM idp_state WHERE expires_at <= ?", (now,))
                return result

        try:
            return await asyncio.to_thread(call)
        except sqlite3.Error as exc:
            raise ServiceUnavailable(f"IdP state store {self._path}: {exc}") from exc

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        def op(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT INTO idp_state(key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at",
                (key, value, now + ttl_s),
            )

        await self._run(op)

    async def get(self, key: str) -> str | None:
        def op(conn: sqlite3.Connection, now: float) -> str | None:
            row = conn.execute(
                "SELECT value FROM idp_state WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(op)

    async def take(self, key: str) -> str | None:
        def op(conn: sqlite3.Connection, now: float) -> str | None:
            # One statement: a concurrent take in another process deletes nothing.
            row = conn.execute(
                "DELETE FROM idp_state WHERE key = ? RETURNING value, expires_at", (key,)
            ).fetchone()
            if row is None or float(row[1]) <= now:
                return None
            return str(row[0])

        return await self._run(op)

    async def close(self) -> None:
        def call() -> None:
            with self._lock:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(call)


__all__ = ["MemoryStateStore", "SQLiteStateStore", "StateStore"]
