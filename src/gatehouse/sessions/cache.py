"""A per-process cache of session records in front of the store.

The hot path reads sessions from here, and concurrent misses for one session share one
store read. Entries are dropped as soon as the store reports an invalidation (sign-out,
refresh), so revocation is seen within the invalidation latency (in process: immediately;
SQLite and PostgreSQL on one machine: the revocation stamp; SQLite: the poll interval;
Redis: pub/sub; PostgreSQL: LISTEN/NOTIFY), not the cache age.

How long an entry is trusted: a cached record can be out of date only by a change the
store has not delivered yet. A store with a change feed says when it last knew it had
delivered everything (:meth:`~.store.SessionStore.changes_confirmed_at`; the SQLite and
PostgreSQL poll, a PING answered on the Redis subscription). An entry is fresh while it is
younger than ``max_age_s`` *or* the feed was confirmed within ``max_age_s``: so with a live
feed a record is read once and then served until it is invalidated, evicted or expires
(100,000 sessions in rotation cost no store reads), and a record is never more than
``max_age_s`` behind the store, also when the feed silently stops (a dead subscription: its
confirmations stop, and every entry ages out as if there were no feed). A flush
(invalidations may have been missed) withdraws the feed's trust from every entry it holds.

Bounded by memory (``session_cache_max_bytes``, each entry charged
:func:`~.sizing.session_bytes`): the least recently used entries go first, one at a time,
never the whole cache at once.

Negative results ("no such session") are kept only ``negative_max_age_s`` (default
0.5 s): enough to blunt a burst of requests with a dead cookie, short enough that a
session created by another process is found quickly.

A read that started before an invalidation may return the old record after it; such a
result is returned to its caller but never cached (an invalidation counter is compared),
so a revoked session cannot come back into the cache.

Store down: when the store raises :class:`~gatehouse.errors.ServiceUnavailable`, a
session that this process read or had confirmed by the change feed within
``stale_grace_s`` (default 60 s) keeps
working from the cache, so a short store outage does not sign everyone out; sessions not
in the cache (and negative entries) are not served stale: the request gets the 503.
Entries invalidated before the outage are gone and stay gone. The price is that a
sign-out done on another replica *during* a Redis outage may be honoured here up to
``stale_grace_s`` late; set it to 0 for strict fail-closed behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import ServiceUnavailable
from .model import Session
from .sizing import session_bytes

log = logging.getLogger("gatehouse.sessions")

#: Memory for cached records per process (about 2 KiB a record without IdP tokens,
#: 4 KiB with them: 65,000 to 130,000 sessions).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Charged for a negative ("no such session") entry: key, entry and slot.
NEGATIVE_ENTRY_BYTES = 250
DEFAULT_MAX_AGE_S = 5.0
DEFAULT_NEGATIVE_MAX_AGE_S = 0.5
DEFAULT_STALE_GRACE_S = 60.0


@dataclass(slots=True)
class _Entry:
    session: Session | None
    fetched_at: float  # monotonic
    size: int  # bytes charged against the budget
    #: The cache's flush generation when read: only entries of the current one may be
    #: kept fresh by the change feed.
    generation: int


def _no_feed() -> float:
    return -math.inf


class SessionCache:
    """LRU cache of ``session id -> Session | None`` with short lifetimes and invalidation."""

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        negative_max_age_s: float = DEFAULT_NEGATIVE_MAX_AGE_S,
        stale_grace_s: float = DEFAULT_STALE_GRACE_S,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._max_age_s = max_age_s
        self._negative_max_age_s = negative_max_age_s
        self._stale_grace_s = stale_grace_s
        self._monotonic = monotonic or time.monotonic
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Session | None]] = {}
        #: Bumped by every flush (invalidations may have been missed).
        self._generation = 0
        #: Sessions invalidated while a read of them was in flight: that read is not cached.
        #: Per session, so a busy stream of other users' sign-outs does not stop caching.
        self._tainted: set[str] = set()
        #: When the store last confirmed it had delivered every change (monotonic);
        #: see :meth:`follow`.
        self._feed: Callable[[], float] = _no_feed

    def follow(self, confirmed_at: Callable[[], float]) -> None:
        """Trust entries while ``confirmed_at()`` (the store's change-feed confirmation,
        monotonic) is within ``max_age_s``, as well as while they are young."""
        self._feed = confirmed_at

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """Estimated memory held by the cached entries."""
        return self._bytes

    def invalidate(self, session_id: str | None) -> None:
        """Drop one session; with ``None`` (invalidations may have been missed), make every
        entry stale instead.

        Stale entries are re-read from the store on their next use, as if they had expired;
        they are not dropped, because the store may be down again by then (a flapping
        Redis) and the outage grace must still be able to serve them.
        """
        if session_id is not None:
            dropped = self._entries.pop(session_id, None)
            if dropped is not None:
                self._bytes -= dropped.size
            if session_id in self._inflight:
                self._tainted.add(session_id)
            return
        self._generation += 1
        expired_at = self._monotonic() - self._max_age_s
        for key, entry in list(self._entries.items()):
            if entry.session is None:
                del self._entries[key]
                self._bytes -= entry.size
            elif entry.fetched_at > expired_at:
                self._entries[key] = _Entry(entry.session, expired_at, entry.size, -1)

    def put(self, session: Session) -> None:
        """Cache a record this process just wrote (created or refreshed)."""
        self._store(session.id, session, self._monotonic())

    def peek(self, session_id: str) -> Session | None:
        """The cached record regardless of age (for tests and diagnostics)."""
        entry = self._entries.get(session_id)
        return None if entry is None else entry.session

    def lookup(self, session_id: str) -> tuple[bool, Session | None]:
        """``(True, record)`` when the cache holds a fresh answer (``None``: known absent),
        else ``(False, None)``. Synchronous: the signed-in hot path needs no coroutine."""
        entry = self._entries.get(session_id)
        if entry is None:
            return False, None
        now = self._monotonic()
        if entry.session is None:
            fresh = now - entry.fetched_at < self._negative_max_age_s
        else:
            fresh = now - entry.fetched_at < self._max_age_s or (
                entry.generation == self._generation and now - self._feed() < self._max_age_s
            )
        if fresh:
            self._entries.move_to_end(session_id)
            return True, entry.session
        return False, None

    def expire(self, session_id: str) -> None:
        """Make one entry stale (re-read on next use), keeping it for the outage grace."""
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.fetched_at = min(entry.fetched_at, self._monotonic() - self._max_age_s)
            entry.generation = -1

    async def get(
        self, session_id: str, load: Callable[[str], Awaitable[Session | None]]
    ) -> Session | None:
        """The session from cache if fresh, else from ``load`` (the store), shared by
        concurrent callers.

        Raises:
            ServiceUnavailable: the store is down and no fresh-enough cached record exists.
        """
        hit, session = self.lookup(session_id)
        if hit:
            return session
        now = self._monotonic()
        entry = self._entries.get(session_id)
        task = self._inflight.get(session_id)
        if task is None:
            # One task per miss, awaited through shield: a caller that is cancelled does not
            # cancel the read for the others waiting on it.
            task = asyncio.ensure_future(self._load(session_id, load, entry, now, self._generation))
            self._inflight[session_id] = task
            task.add_done_callback(lambda t: self._loaded(session_id, t))
        return await asyncio.shield(task)

    def _loaded(self, session_id: str, task: asyncio.Future[Session | None]) -> None:
        if self._inflight.get(session_id) is task:
            del self._inflight[session_id]
            self._tainted.discard(session_id)
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    async def _load(
        self,
        session_id: str,
        load: Callable[[str], Awaitable[Session | None]],
        entry: _Entry | None,
        started: float,
        generation: int,
    ) -> Session | None:
        # ``generation`` was read when the miss happened, not when this task first runs.
        try:
            session = await load(session_id)
        except ServiceUnavailable:
            if (
                entry is not None
                and entry.session is not None
                and started - self._known_at(entry) < self._stale_grace_s
                and session_id in self._entries  # not invalidated meanwhile
            ):
                log.warning("session store unavailable: serving a cached session")
                return entry.session
            raise
        if generation == self._generation and session_id not in self._tainted:
            self._store(session_id, session, self._monotonic())
        return session

    def _known_at(self, entry: _Entry) -> float:
        """When the entry was last known to match the store: read then, or confirmed since
        by the change feed (unless flushed)."""
        if entry.generation == self._generation:
            return max(entry.fetched_at, self._feed())
        return entry.fetched_at

    def _store(self, session_id: str, session: Session | None, now: float) -> None:
        size = NEGATIVE_ENTRY_BYTES if session is None else session_bytes(session)
        old = self._entries.get(session_id)
        if old is not None:
            self._bytes -= old.size
        self._entries[session_id] = _Entry(session, now, size, self._generation)
        self._entries.move_to_end(session_id)
        self._bytes += size
        # Least recently used first; the entry just stored stays even if alone over budget.
        while self._bytes > self._max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
