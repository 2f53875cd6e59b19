"""The shared session store on PostgreSQL (``databroker_storage_type: postgres``).

Driver: psycopg 3 with psycopg_pool, not asyncpg: it is typed (mypy strict without stubs),
native asyncio, and parses connection strings with libpq itself, so every form Pomerium's
accepts works unchanged (``postgres://``/``postgresql://`` URIs, ``key=value``, ``sslmode``,
``PG*`` environment variables).

Tables, created on start (idempotent, under an advisory lock so replicas starting together
do not race) in the first schema of the connection's ``search_path`` (give gatehouse its
own with ``options=-csearch_path=NAME`` in the connection string). ``prefix`` defaults to
``gatehouse_``; ``_v1`` is the layout version: a later layout gets new tables::

    {prefix}sessions_v1   id, record (JSON, tokens encrypted), expires_at, last_seen_at
                          (activity kept in its own column: a touch never rewrites a record)
    {prefix}once_v1       one-shot keys and their expiry
    {prefix}locks_v1      leases: name, token, expiry
    {prefix}changes_v1    seq, session_id, at (database clock): one row per delete/replace

Invalidation: a delete or replace writes its change row and calls ``pg_notify`` in the same
statement, so the notification goes out exactly when the change commits. Each process keeps
one connection that LISTENs on a channel named after the database, schema and prefix; a
notification makes it read the new change rows at once (milliseconds end to end). That read
also runs every ``poll_interval_s`` (1 s) regardless, so a lost notification (listener
reconnecting, a pooler that drops LISTEN) delays a sign-out by at most that long. Change rows
are read by a window on the database clock that overlaps the previous read by
``READ_OVERLAP_S`` (a row whose statement committed late is still seen); rows already
delivered are skipped. After an outage longer than half ``CHANGE_RETENTION_S`` (rows we
never saw may be pruned), listeners are told to drop everything.

Same machine: like SQLite, a delete also changes the revocation stamp in ``data_dir``
(:mod:`.stamp`) once committed, so sibling workers catch up before trusting their caches.

Expiry of records, one-shot keys and leases uses the caller's clock, as SQLite does: expired
rows are never returned, and are swept every ``SWEEP_INTERVAL_S``.

Failures: every driver or pool error becomes :class:`ServiceUnavailable` whose message never
holds the connection string or its password. A call that finds its pooled connection dead
(a PostgreSQL restart kills them all) moves on to the next one (see :meth:`_run`); the pool
stops retrying a connection after ``RECONNECT_TIMEOUT_S``, so the next request starts a
fresh attempt: service resumes within seconds of PostgreSQL returning, however long it was
away. The listener logs the outage once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import ServiceUnavailable
from .model import Session
from .serialize import RecordCodec
from .stamp import SharedStamp
from .store import SessionStore

log = logging.getLogger("gatehouse.sessions")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

#: libpq's connect timeout unless the connection string sets one (whole seconds, libpq's
#: minimum is 2): fail fast when PostgreSQL is down rather than hold requests.
CONNECT_TIMEOUT_S = 2
#: How long a request waits for a pooled connection before it gets a 503 (seconds).
POOL_TIMEOUT_S = 2.0
#: The same wait while the listener finds PostgreSQL unreachable: requests get their 503
#: at once instead of each holding a connection slot for POOL_TIMEOUT_S (seconds).
DOWN_POOL_TIMEOUT_S = 0.25
#: Client-side bound on one store call, connection included; also the server-side
#: ``statement_timeout`` of every pooled connection (seconds).
OPERATION_TIMEOUT_S = 5.0
#: The pool gives up re-establishing a connection after this long; the next request that
#: needs one starts afresh (psycopg_pool's backoff would otherwise grow to minutes).
RECONNECT_TIMEOUT_S = 5.0
#: Connections per process (requests needing the store at once; the listener is extra).
#: Small: every worker of every replica holds its own, within max_connections (100).
POOL_MAX_SIZE = 4
#: The listener checks its connection after this long without a notification (seconds).
LISTEN_LIVENESS_S = 5.0
#: Longest pause between attempts to re-establish the listener (seconds).
MAX_RELISTEN_BACKOFF_S = 2.0
#: Each read of the change rows looks back this far before the previous one (seconds):
#: longer than any write statement may take (they are bounded by OPERATION_TIMEOUT_S).
READ_OVERLAP_S = 2 * OPERATION_TIMEOUT_S
#: How long change rows are kept for other processes to read (seconds).
CHANGE_RETENTION_S = 300.0
#: How often expired rows are swept (seconds).
SWEEP_INTERVAL_S = 60.0
#: Longest message from the driver kept in an error (characters).
MAX_REASON_CHARS = 200
#: ``[a-z_][a-z0-9_]*``, short enough that every table and index name fits in 63 bytes.
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,31}")
#: Every libpq URI scheme (``postgres`` is what Pomerium's documentation uses).
URI_SCHEMES = ("postgres://", "postgresql://")


class _Statements:
    """Every statement the store runs, composed once for one table prefix."""

    def __init__(self, prefix: str) -> None:
        def name(base: str) -> sql.Identifier:
            return sql.Identifier(f"{prefix}{base}")

        s, o, lk, c = name("sessions_v1"), name("once_v1"), name("locks_v1"), name("changes_v1")
        self.lock_key = int.from_bytes(
            hashlib.sha256(prefix.encode()).digest()[:8], "big", signed=True
        )
        self.schema = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, record text NOT NULL, "
                "expires_at double precision NOT NULL, "
                "last_seen_at double precision NOT NULL DEFAULT 0)"
            ).format(s),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(
                name("sessions_v1_expires"), s
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, "
                "expires_at double precision NOT NULL)"
            ).format(o),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, token text NOT NULL, "
                "expires_at double precision NOT NULL)"
            ).format(lk),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, "
                "session_id text NOT NULL, "
                "at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))"
            ).format(c),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (at)").format(name("changes_v1_at"), c),
        ]
        self.get = sql.SQL(
            "SELECT record, last_seen_at FROM {} WHERE id = %s AND expires_at > %s"
        ).format(s)
        self.list = sql.SQL(
            "SELECT record, last_seen_at FROM {} WHERE expires_at > %s "
            "ORDER BY last_seen_at DESC LIMIT %s"
        ).format(s)
        self.put = sql.SQL(
            "INSERT INTO {} AS t (id, record, expires_at, last_seen_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, "
            "expires_at = EXCLUDED.expires_at, "
            "last_seen_at = GREATEST(t.last_seen_at, EXCLUDED.last_seen_at)"
        ).format(s)
        # One statement each: the change row, the write and the notification commit together.
        self.replace = sql.SQL(
            "WITH u AS (UPDATE {} SET record = %s, expires_at = %s "
            "WHERE id = %s AND expires_at > %s RETURNING id), "
            "c AS (INSERT INTO {} (session_id) SELECT id FROM u RETURNING seq) "
            "SELECT seq, pg_notify(%s, seq::text) FROM c"
        ).format(s, c)
        self.delete = sql.SQL(
            "WITH d AS (DELETE FROM {} WHERE id = %s), "
            "c AS (INSERT INTO {} (session_id) VALUES (%s) RETURNING seq) "
            "SELECT seq, pg_notify(%s, seq::text) FROM c"
        ).format(s, c)
        self.touch = sql.SQL(
            "UPDATE {} SET last_seen_at = GREATEST(last_seen_at, %s) WHERE id = %s"
        ).format(s)
        # Insert, or take over only a row that has expired: atomic under concurrent callers.
        self.consume_once = sql.SQL(
            "INSERT INTO {} AS t (key, expires_at) VALUES (%s, %s) ON CONFLICT (key) "
            "DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE t.expires_at <= %s"
        ).format(o)
        self.acquire_lock = sql.SQL(
            "INSERT INTO {} AS t (name, token, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, "
            "expires_at = EXCLUDED.expires_at WHERE t.expires_at <= %s"
        ).format(lk)
        self.release_lock = sql.SQL("DELETE FROM {} WHERE name = %s AND token = %s").format(lk)
        # One round trip: the database clock (where the next read starts, less the overlap)
        # and the rows since `%s` (NULL: the first read, which looks back only the overlap).
        # Always one row at least (seq NULL: no changes).
        self.changes = sql.SQL(
            "SELECT extract(epoch FROM statement_timestamp())::float8, c.seq, c.session_id "
            "FROM (SELECT 1) AS one LEFT JOIN {} AS c "
            "ON c.at > COALESCE(%s::float8, extract(epoch FROM statement_timestamp()) - %s) "
            "ORDER BY c.seq"
        ).format(c)
        self.sweep = [
            sql.SQL("DELETE FROM {} WHERE expires_at <= %(now)s").format(s),
            sql.SQL("DELETE FROM {} WHERE expires_at <= %(now)s").format(o),
            sql.SQL("DELETE FROM {} WHERE expires_at <= %(now)s").format(lk),
            sql.SQL(
                "DELETE FROM {} WHERE at < extract(epoch FROM clock_timestamp()) - %(keep)s"
            ).format(c),
        ]


def parse_conninfo(conninfo: str) -> dict[str, Any]:
    """The libpq parameters of ``conninfo``.

    Raises:
        ValueError: not a connection string libpq accepts (the message never quotes it).
    """
    if not conninfo.strip():
        raise ValueError("empty; expected postgres://user:password@host:5432/dbname or key=value")
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        # libpq's message quotes the string, password and all: keep only its kind.
        raise ValueError(
            "not a PostgreSQL connection string (expected postgres://user:password@host/dbname "
            "or host=... dbname=... user=...)"
        ) from exc


class PostgresStore(SessionStore):
    """A :class:`SessionStore` in PostgreSQL, shared by every replica."""

    def __init__(
        self,
        conninfo: str,
        records: RecordCodec,
        *,
        prefix: str = "gatehouse_",
        poll_interval_s: float = 1.0,
        stamp_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Raises:
            ValueError: ``conninfo`` is not a connection string, or ``prefix`` not a name.
        """
        super().__init__(records)
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"table prefix {prefix!r}: expected [a-z_][a-z0-9_]*, at most 32")
        params = parse_conninfo(conninfo)
        self._secret = str(params.get("password") or "")
        self._conninfo = conninfo
        self._prefix = prefix
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in params:
            self._kwargs["application_name"] = "gatehouse"
        self._sql = _Statements(prefix)
        self._poll_interval_s = poll_interval_s
        self._stamp_path = stamp_path
        self._clock = clock
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            conninfo,
            kwargs=self._kwargs,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            open=False,
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            configure=_configure,
            name="gatehouse-sessions",
        )
        self._closed = False
        self._opened = False  # the pool, which must be opened inside the event loop
        self._schema_lock = asyncio.Lock()
        self._channel: str | None = None  # known once the schema is ensured
        self._stamp: SharedStamp | None = None
        self._listener: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._attempted = asyncio.Event()  # the listener tried at least once
        self._wake = asyncio.Event()
        self._read_lock = asyncio.Lock()
        #: Start of the next read of change rows (database clock), and when (our monotonic
        #: clock) the last read succeeded.
        self._since: float | None = None
        self._last_read_ok = time.monotonic()
        #: Change rows already delivered (seq -> monotonic time), skipped by later reads.
        self._delivered: dict[int, float] = {}
        #: Why PostgreSQL could not be reached last, and whether that was logged.
        self._down_reason = ""
        self._down_logged = False

    def __repr__(self) -> str:  # never the connection string: it may hold a password
        return f"PostgresStore(prefix={self._prefix!r})"

    # -- plumbing ----------------------------------------------------------------------
    def _reason(self, exc: BaseException) -> str:
        """A one-line description of ``exc`` safe to log and show in errors."""
        if isinstance(exc, TimeoutError):
            return f"no answer within {OPERATION_TIMEOUT_S:g} s"
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._secret:
            text = text.replace(self._secret, "***")
        text = text.replace(self._conninfo, "***")
        return text[:MAX_REASON_CHARS]

    async def _run(self, fn: Callable[[Conn], Awaitable[T]], *, idempotent: bool = True) -> T:
        """``fn`` on a pooled connection, within OPERATION_TIMEOUT_S.

        A pooled connection may have died since its last use (a PostgreSQL restart kills
        them all): it fails at once, and the call moves on to the next connection, up to a
        new one. An idempotent ``fn`` simply runs again; any other is preceded by an empty
        query, so it never runs twice (a retried one-shot key would refuse its own use).
        """
        if self._closed:
            raise ServiceUnavailable("postgres session store: closed")
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                if not self._opened:
                    await self._pool.open()
                    self._opened = True
                for attempt in range(POOL_MAX_SIZE + 1):
                    more = attempt < POOL_MAX_SIZE
                    wait = DOWN_POOL_TIMEOUT_S if self._down_reason else POOL_TIMEOUT_S
                    # Leaving the block with a broken connection makes the pool discard it.
                    async with self._pool.connection(timeout=wait) as conn:
                        if not idempotent:
                            try:
                                await conn.execute("")
                            except psycopg.OperationalError:
                                if conn.broken and more:
                                    continue
                                raise
                        try:
                            if self._channel is None:
                                await self._ensure_schema(conn)
                            return await fn(conn)
                        except psycopg.OperationalError:
                            if idempotent and conn.broken and more:
                                continue
                            raise
                raise AssertionError("unreachable")  # the last attempt returns or raises
        except PoolTimeout as exc:
            if self._down_reason:
                why = f"cannot connect ({self._down_reason})"
            else:
                why = f"no free connection within {POOL_TIMEOUT_S:g} s (all {POOL_MAX_SIZE} busy)"
            raise ServiceUnavailable(f"postgres session store: {why}") from exc
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise ServiceUnavailable(f"postgres session store: {self._reason(exc)}") from exc

    async def _ensure_schema(self, conn: Conn) -> None:
        async with self._schema_lock:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._sql.lock_key,))
                for statement in self._sql.schema:
                    await conn.execute(statement)
                cur = await conn.execute("SELECT current_database(), current_schema()")
                row = await cur.fetchone()
            where = f"{row[0]}.{row[1]}.{self._prefix}" if row else self._prefix
            # Channels are per database, not per schema: name ours after all three. 63 bytes max.
            digest = hashlib.sha256(where.encode()).hexdigest()[:24]
            self._channel = f"gatehouse_sessions_{digest}"

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the pool, create the tables, start listening; waits until it listens.

        Raises:
            ServiceUnavailable: PostgreSQL cannot be reached now (the store keeps trying,
                and serves requests once it can).
        """
        if self._stamp is None and self._stamp_path is not None:
            try:
                self._stamp = SharedStamp(self._stamp_path)
            except OSError as exc:
                raise ServiceUnavailable(f"postgres session store: {exc}") from exc
        # psycopg_pool logs every failed attempt; the listener reports outages once instead
        # (and not at all while start() runs: its caller reports that one).
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self._down_logged = True
        await self._pool.open()
        self._opened = True
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_loop(), name="gatehouse-pg-listen")
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name="gatehouse-pg-poll")
        # The listener's first attempt decides (a refused connection fails at once).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), OPERATION_TIMEOUT_S)
        if self._listening.is_set():
            self._down_logged = False
        else:
            why = self._down_reason or "no answer"
            raise ServiceUnavailable(f"postgres session store: cannot connect ({why})")

    async def close(self) -> None:
        for task in (self._listener, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._poller = None
        if not self._closed:
            self._closed = True
            await self._pool.close()
        if self._stamp is not None:
            self._stamp.close()
            self._stamp = None

    @property
    def listening(self) -> bool:
        """Whether this process receives notifications now."""
        return self._listening.is_set()

    async def ping(self) -> None:
        """Connect and run an empty query, creating nothing.

        Raises:
            ServiceUnavailable: PostgreSQL does not answer.
        """
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
                try:
                    await conn.execute("")
                finally:
                    await conn.close()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise ServiceUnavailable(f"postgres session store: {self._reason(exc)}") from exc

    # -- records ----------------------------------------------------------------------------
    async def get(self, session_id: str) -> Session | None:
        now = self._clock()

        async def q(conn: Conn) -> tuple[str, float] | None:
            cur = await conn.execute(self._sql.get, (session_id, now))
            row = await cur.fetchone()
            return None if row is None else (str(row[0]), float(row[1]))

        row = await self._run(q)
        return None if row is None else self._decode(row[0], row[1])

    async def list_sessions(self, limit: int) -> list[Session] | None:
        now = self._clock()

        async def q(conn: Conn) -> list[tuple[str, float]]:
            cur = await conn.execute(self._sql.list, (now, limit))
            return [(str(r[0]), float(r[1])) for r in await cur.fetchall()]

        found = [self._decode(record, seen) for record, seen in await self._run(q)]
        return [s for s in found if s is not None]

    async def put(self, session: Session) -> None:
        text = self._records.dumps(session)
        args = (session.id, text, session.expires_at, session.last_seen_at)

        async def q(conn: Conn) -> None:
            await conn.execute(self._sql.put, args)

        await self._run(q)

    async def replace(self, session: Session) -> bool:
        text = self._records.dumps(session)
        now = self._clock()

        async def q(conn: Conn) -> int | None:
            args = (text, session.expires_at, session.id, now, self._channel)
            row = await (await conn.execute(self._sql.replace, args)).fetchone()
            return None if row is None else int(row[0])

        seq = await self._run(q)
        if seq is None:
            return False
        self._delivered[seq] = time.monotonic()
        self._notify(session.id)
        return True

    async def delete(self, session_id: str) -> None:
        async def q(conn: Conn) -> int | None:
            args = (session_id, session_id, self._channel)
            row = await (await conn.execute(self._sql.delete, args)).fetchone()
            return None if row is None else int(row[0])

        seq = await self._run(q)
        if seq is not None:
            self._delivered[seq] = time.monotonic()
        # After the commit: a sibling worker that sees the new stamp finds the change row.
        if self._stamp is not None:
            self._stamp.change()
        self._notify(session_id)

    async def touch(self, session_id: str, at: float) -> None:
        async def q(conn: Conn) -> None:
            await conn.execute(self._sql.touch, (at, session_id))

        await self._run(q)

    # -- coordination ---------------------------------------------------------------------
    async def consume_once(self, key: str, ttl_s: float) -> bool:
        now = self._clock()

        async def q(conn: Conn) -> bool:
            cur = await conn.execute(self._sql.consume_once, (key, now + ttl_s, now))
            return cur.rowcount == 1

        return await self._run(q, idempotent=False)

    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        now = self._clock()
        token = secrets.token_urlsafe(16)

        async def q(conn: Conn) -> bool:
            cur = await conn.execute(self._sql.acquire_lock, (name, token, now + ttl_s, now))
            return cur.rowcount == 1

        return token if await self._run(q, idempotent=False) else None

    async def release_lock(self, name: str, token: str) -> None:
        async def q(conn: Conn) -> None:
            await conn.execute(self._sql.release_lock, (name, token))

        await self._run(q)

    # -- invalidation -----------------------------------------------------------------------
    def revocation_stamp(self) -> SharedStamp | None:
        return self._stamp

    def changes_confirmed_at(self) -> float:
        return self._confirmed_at

    async def catch_up(self) -> None:
        await self.read_changes()

    async def read_changes(self) -> None:
        """Deliver every change row not delivered yet (run on notification, by the poll,
        and on catch-up); concurrent callers take turns."""
        async with self._read_lock:

            async def q(conn: Conn) -> tuple[float, list[tuple[int, str]]]:
                # A row this read's snapshot misses committed after the statement started,
                # so its `at` lies inside the next read's overlap.
                cur = await conn.execute(self._sql.changes, (self._since, READ_OVERLAP_S))
                found = await cur.fetchall()
                now_db = float(found[0][0]) if found else 0.0
                return now_db, [(int(r[1]), str(r[2])) for r in found if r[1] is not None]

            started = time.monotonic()  # every change committed before it is in `rows`
            now_db, rows = await self._run(q)
            mono = time.monotonic()
            if mono - self._last_read_ok > CHANGE_RETENTION_S / 2:
                self._notify(None)  # rows we never read may have been pruned
            self._last_read_ok = mono
            self._since = max(self._since or 0.0, now_db - READ_OVERLAP_S)
            for seq, session_id in rows:
                if seq not in self._delivered:
                    self._delivered[seq] = mono
                    self._notify(session_id)
            # A row leaves every read window READ_OVERLAP_S after it committed.
            horizon = mono - 3 * READ_OVERLAP_S
            for seq in [s for s, at in self._delivered.items() if at < horizon]:
                del self._delivered[seq]
            self._confirmed_at = max(self._confirmed_at, started)

    async def sweep(self) -> None:
        """Delete expired sessions, one-shot keys, leases and old change rows."""
        args = {"now": self._clock(), "keep": CHANGE_RETENTION_S}

        async def q(conn: Conn) -> None:
            for statement in self._sql.sweep:
                await conn.execute(statement, args)

        await self._run(q)

    async def _poll_loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            self._wake.clear()
            try:
                await self.read_changes()
                if time.monotonic() - last_sweep > SWEEP_INTERVAL_S:
                    last_sweep = time.monotonic()
                    await self.sweep()
            except ServiceUnavailable as exc:
                # The listener logs the outage once; a line per poll would flood the log.
                log.debug("session change read failed: %s", exc)

    async def _listen_loop(self) -> None:
        backoff = 0.05
        while True:
            conn: Conn | None = None
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
                    await self._ensure_schema(conn)
                    channel = sql.Identifier(self._channel or "")
                    await conn.execute(sql.SQL("LISTEN {}").format(channel))
                self._up()
                backoff = 0.05
                while True:
                    async for _ in conn.notifies(timeout=LISTEN_LIVENESS_S):
                        self._wake.set()
                    async with asyncio.timeout(OPERATION_TIMEOUT_S):
                        await conn.execute("")  # still there? (a dead peer raises here)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._down(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RELISTEN_BACKOFF_S)
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error, OSError):
                        await conn.close()

    def _up(self) -> None:
        self._listening.set()
        self._wake.set()  # read what changed while we were not listening
        if self._down_logged and self._attempted.is_set():
            log.warning("postgres session store reachable again")
        self._attempted.set()
        self._down_reason = ""
        self._down_logged = False

    def _down(self, exc: BaseException) -> None:
        self._listening.clear()
        self._attempted.set()
        self._down_reason = self._reason(exc)
        if not self._down_logged:
            self._down_logged = True
            log.warning("postgres session store unreachable: %s", self._down_reason)


async def _configure(conn: Conn) -> None:
    """Bound every statement on the server too, so a stuck query frees its connection."""
    await conn.execute("SET statement_timeout = 5000")  # OPERATION_TIMEOUT_S, in ms
