"""The embedded default session store: one SQLite file in ``data_dir``.

Safe for several worker processes on one machine: WAL journal (readers never block the
writer), a busy timeout instead of immediate ``SQLITE_BUSY``, and every check-and-set done
in one statement or one ``BEGIN IMMEDIATE`` transaction. The event loop never waits for a
lock: each store owns one connection used only from its own single worker thread, with
one exception, the *direct path*.

Direct path: the one-statement writes a sign-in makes (:meth:`SQLiteStore.consume_once`,
:meth:`SQLiteStore.put`) run on the event loop's own connection first. That connection
never waits (``busy_timeout=0``) and never checkpoints (``wal_autocheckpoint=0``; with
``synchronous=NORMAL`` a WAL commit is a write to the page cache, no ``fsync``), so the
statement takes microseconds or fails at once; on any error (another process holds the
write lock, anything else) the same statement goes to the worker thread as before, with
the busy timeout and the usual error mapping. A thread hop costs about 100 µs of CPU
against 12 µs for the statement itself (bench/signin_bench.py: three per sign-in). Every
:data:`DIRECT_CHECKPOINT_EVERY` direct commits the worker thread runs a passive
checkpoint, as SQLite's auto-checkpoint would have, so the WAL stays small.

Invalidation: every delete/replace appends a row to ``changes`` (an AUTOINCREMENT
counter); each process polls for rows past the last one it saw (``poll_interval_s``,
default 0.5 s) and notifies its listeners. Old rows are pruned after
``CHANGE_RETENTION_S``; a process that could not poll for longer than half that tells
its listeners to drop everything. A delete also changes the revocation stamp beside the
file (:mod:`.stamp`) once committed; a process that sees the stamp change reads the
change rows at once (:meth:`SQLiteStore.catch_up`), so sign-outs do not wait for the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import ServiceUnavailable
from .model import Session
from .serialize import RecordCodec
from .stamp import SharedStamp
from .store import SessionStore

log = logging.getLogger("gatehouse.sessions")

T = TypeVar("T")

#: How long change rows are kept for other processes to see (seconds).
CHANGE_RETENTION_S = 300.0
#: How often expired rows are swept (seconds).
SWEEP_INTERVAL_S = 60.0
#: How long a statement waits for another process's write lock before failing (ms).
BUSY_TIMEOUT_MS = 5000
#: Suffix of the revocation stamp file beside the database (as SQLite's ``-wal``).
STAMP_SUFFIX = "-revocations"
SCHEMA_VERSION = 1
#: Direct-path commits between passive WAL checkpoints on the worker thread (SQLite's
#: auto-checkpoint is 1,000 pages; a commit here writes a few).
DIRECT_CHECKPOINT_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(
    id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL,
    last_seen_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS once_keys(key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks(
    name TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, at REAL NOT NULL);
"""


class SQLiteStore(SessionStore):
    """A :class:`SessionStore` in a SQLite file shared by the processes of one machine."""

    def __init__(
        self,
        path: str | Path,
        records: RecordCodec,
        *,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(records)
        self._path = Path(path)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatehouse-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        self._last_seq = 0
        self._poller: asyncio.Task[None] | None = None
        self._closed = False
        self._stamp: SharedStamp | None = None  # opened by start()
        #: The direct path's connection and the thread it belongs to (see the docstring).
        self._direct: sqlite3.Connection | None = None
        self._direct_thread = 0
        self._direct_commits = 0
        self._checkpointing: asyncio.Task[None] | None = None

    # -- plumbing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                self._init_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Switching to WAL needs an exclusive lock and SQLite does not call the busy
        # handler for it, so workers starting together retry here. WAL persists in the file.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # on the store's own thread, never the event loop
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise ServiceUnavailable("session store is closed")

        def call() -> T:
            return fn(self._connect())

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            raise ServiceUnavailable(f"sqlite session store: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` (one autocommit statement) on the direct path, else on the worker thread.

        While a checkpoint is pending, writes queue behind it on the worker thread: the
        first one after it then starts the WAL from its beginning again, which SQLite
        does only when every frame has been copied back, never under a stream of writes."""
        conn = None if self._checkpointing is not None else self._direct_connection()
        if conn is not None:
            try:
                result = fn(conn)
            except (sqlite3.Error, OSError):
                pass  # locked by another writer, or anything else: the worker decides
            else:
                self._direct_commits += 1
                if self._direct_commits % DIRECT_CHECKPOINT_EVERY == 0:
                    self._checkpoint_soon()
                return result
        return await self._run(fn)

    def _direct_connection(self) -> sqlite3.Connection | None:
        """The event loop thread's connection, opened after :meth:`start` made the
        schema; ``None`` before that, after close, or on another thread."""
        if self._closed or self._stamp is None:
            return None
        if self._direct is None:
            try:
                conn = sqlite3.connect(self._path, timeout=0, isolation_level=None)
                conn.execute("PRAGMA busy_timeout=0")
                conn.execute("PRAGMA wal_autocheckpoint=0")
                conn.execute("PRAGMA synchronous=NORMAL")
            except (sqlite3.Error, OSError) as exc:
                log.debug("sqlite direct path unavailable: %s", exc)
                return None
            self._direct, self._direct_thread = conn, threading.get_ident()
        if self._direct_thread != threading.get_ident():
            return None
        return self._direct

    def _checkpoint_soon(self) -> None:
        if self._checkpointing is not None:
            return

        def q(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

        async def checkpoint() -> None:
            try:
                await self._run(q)
            except ServiceUnavailable as exc:
                log.warning("sqlite WAL checkpoint failed: %s", exc)
            finally:
                self._checkpointing = None

        self._checkpointing = asyncio.ensure_future(checkpoint())

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._stamp is None:
            try:
                self._stamp = SharedStamp(self._path.with_name(self._path.name + STAMP_SUFFIX))
            except OSError as exc:
                raise ServiceUnavailable(f"sqlite session store: {exc}") from exc

        def init(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
            return int(row[0])

        self._last_seq = await self._run(init)
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name="gatehouse-sqlite-poll")

    async def close(self) -> None:
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        if self._direct is not None and self._direct_thread == threading.get_ident():
            self._direct.close()
        self._direct = None
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if not self._closed:
            self._closed = True

            def shut() -> None:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

            await asyncio.get_running_loop().run_in_executor(self._executor, shut)
            self._executor.shutdown(wait=False)
            if self._stamp is not None:
                self._stamp.close()
                self._stamp = None

    # -- records ----------------------------------------------------------------------------
    async def get(self, session_id: str) -> Session | None:
        now = self._clock()

        def q(conn: sqlite3.Connection) -> tuple[str, float] | None:
            row = conn.execute(
                "SELECT record, last_seen_at FROM sessions WHERE id=? AND expires_at>?",
                (session_id, now),
            ).fetchone()
            return None if row is None else (row[0], row[1])

        row = await self._run(q)
        return None if row is None else self._decode(row[0], row[1])

    async def list_sessions(self, limit: int) -> list[Session] | None:
        now = self._clock()

        def q(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            rows = conn.execute(
                "SELECT record, last_seen_at FROM sessions WHERE expires_at>? "
                "ORDER BY last_seen_at DESC LIMIT ?",
                (now, limit),
            ).fetchall()
            return [(r[0], r[1]) for r in rows]

        found = [self._decode(record, seen) for record, seen in await self._run(q)]
        return [s for s in found if s is not None]

    async def put(self, session: Session) -> None:
        text = self._records.dumps(session)

        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sessions(id, record, expires_at, last_seen_at) VALUES(?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET record=excluded.record, "
                "expires_at=excluded.expires_at",
                (session.id, text, session.expires_at, session.last_seen_at),
            )

        await self._write(q)

    async def replace(self, session: Session) -> bool:
        text = self._records.dumps(session)
        now = self._clock()

        def q(conn: sqlite3.Connection) -> bool:
            def body(c: sqlite3.Connection) -> bool:
                cur = c.execute(
                    "UPDATE sessions SET record=?, expires_at=? WHERE id=? AND expires_at>?",
                    (text, session.expires_at, session.id, now),
                )
                if cur.rowcount != 1:
                    return False
                c.execute("INSERT INTO changes(session_id, at) VALUES(?,?)", (session.id, now))
                return True

            return self._transaction(conn, body)

        written = await self._run(q)
        if written:
            self._notify(session.id)
        return written

    async def delete(self, session_id: str) -> None:
        now = self._clock()

        def q(conn: sqlite3.Connection) -> None:
            def body(c: sqlite3.Connection) -> None:
                c.execute("DELETE FROM sessions WHERE id=?", (session_id,))
                c.execute("INSERT INTO changes(session_id, at) VALUES(?,?)", (session_id, now))

            self._transaction(conn, body)

        await self._run(q)
        # After the commit: a process that sees the new stamp finds the change row.
        if self._stamp is not None:
            self._stamp.change()
        self._notify(session_id)

    async def touch(self, session_id: str, at: float) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sessions SET last_seen_at=MAX(last_seen_at, ?) WHERE id=?",
                (at, session_id),
            )

        await self._run(q)

    # -- coordination ---------------------------------------------------------------------
    async def consume_once(self, key: str, ttl_s: float) -> bool:
        now = self._clock()

        def q(conn: sqlite3.Connection) -> bool:
            # One statement: insert, or take over only a row that has expired.
            cur = conn.execute(
                "INSERT INTO once_keys(key, expires_at) VALUES(?,?) ON CONFLICT(key) DO UPDATE "
                "SET expires_at=excluded.expires_at WHERE once_keys.expires_at<=?",
                (key, now + ttl_s, now),
            )
            return cur.rowcount == 1

        return await self._write(q)

    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        now = self._clock()
        token = secrets.token_urlsafe(16)

        def q(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO locks(name, token, expires_at) VALUES(?,?,?) ON CONFLICT(name) "
                "DO UPDATE SET token=excluded.token, expires_at=excluded.expires_at "
                "WHERE locks.expires_at<=?",
                (name, token, now + ttl_s, now),
            )
            return cur.rowcount == 1

        return token if await self._run(q) else None

    async def release_lock(self, name: str, token: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM locks WHERE name=? AND token=?", (name, token))

        await self._run(q)

    # -- invalidation polling -------------------------------------------------------------
    def revocation_stamp(self) -> SharedStamp | None:
        return self._stamp

    def changes_confirmed_at(self) -> float:
        return self._confirmed_at

    async def catch_up(self) -> None:
        await self.poll_changes()

    async def poll_changes(self) -> None:
        """Deliver changes made by any process since the last poll (also run by the loop)."""

        def q(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = conn.execute(
                "SELECT seq, session_id FROM changes WHERE seq>? ORDER BY seq", (self._last_seq,)
            ).fetchall()
            return [(int(r[0]), str(r[1])) for r in rows]

        started = time.monotonic()  # the read's snapshot holds every commit before this
        for seq, session_id in await self._run(q):
            self._last_seq = max(self._last_seq, seq)
            self._notify(session_id)
        self._confirmed_at = max(self._confirmed_at, started)

    async def sweep(self) -> None:
        """Delete expired sessions, one-shot keys, leases and old change rows."""
        now = self._clock()

        def q(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sessions WHERE expires_at<=?", (now,))
            conn.execute("DELETE FROM once_keys WHERE expires_at<=?", (now,))
            conn.execute("DELETE FROM locks WHERE expires_at<=?", (now,))
            conn.execute("DELETE FROM changes WHERE at<?", (now - CHANGE_RETENTION_S,))

        await self._run(q)

    async def _poll_loop(self) -> None:
        last_ok = time.monotonic()
        last_sweep = 0.0
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.poll_changes()
                now = time.monotonic()
                if now - last_ok > CHANGE_RETENTION_S / 2:
                    self._notify(None)  # rows we never saw may have been pruned
                last_ok = now
                if now - last_sweep > SWEEP_INTERVAL_S:
                    last_sweep = now
                    await self.sweep()
            except ServiceUnavailable as exc:
                log.warning("session invalidation poll failed: %s", exc)
