"""The session store interface shared by ``memory``, ``sqlite``, ``redis`` and ``postgres``.

A store keeps session records (tokens encrypted at rest by :class:`RecordCodec`), a
"last seen" time per session kept apart from the record, one-shot keys
(:meth:`SessionStore.consume_once`: handoff tokens, OIDC ``state``, authorization codes)
and short leases (:meth:`SessionStore.acquire_lock`: one refresher per session across
processes). It also tells listeners which sessions changed, so per-process caches can drop
them: in process (memory), by polling a change counter (SQLite), by pub/sub (Redis), or
by LISTEN/NOTIFY with a polling fallback (PostgreSQL).

Every failure of the backing service is raised as :class:`gatehouse.errors.ServiceUnavailable`
(``from`` the original), never as the driver's own exception.

Invalidation listeners are called with a session id, or with ``None`` meaning "drop
everything": sent when the store cannot be sure it saw every change (e.g. after the Redis
subscription reconnects, or after a PostgreSQL outage longer than its change retention).

A store with a change feed also says when it last knew that every change made anywhere
before that moment had reached its listeners (:meth:`SessionStore.changes_confirmed_at`):
the session cache trusts its entries while that confirmation is recent, instead of
re-reading each record every few seconds.

A store shared by the processes of one machine may also offer a revocation stamp
(:meth:`SessionStore.revocation_stamp`): changed after every delete, it lets each
process notice a sign-out with one memory read and :meth:`SessionStore.catch_up` before
trusting its cache, so a sign-out holds in every worker once it has returned.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable

from .model import Session
from .serialize import CorruptRecord, RecordCodec
from .stamp import SharedStamp

log = logging.getLogger("gatehouse.sessions")

InvalidationListener = Callable[[str | None], None]


class SessionStore(abc.ABC):
    """Async session storage; see the module docstring for the contract."""

    def __init__(self, records: RecordCodec) -> None:
        self._records = records
        self._listeners: list[InvalidationListener] = []
        #: Set by stores with a change feed; see :meth:`changes_confirmed_at`.
        self._confirmed_at = -math.inf

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections and start delivering invalidations."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and release connections."""

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Check that the backing service answers now, creating nothing (``gatehouse check``).

        Raises:
            ServiceUnavailable: it does not.
        """

    # -- records ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The record, with ``last_seen_at`` filled in, or ``None`` if absent or expired."""

    @abc.abstractmethod
    async def put(self, session: Session) -> None:
        """Create or overwrite a record; it expires at ``session.expires_at``."""

    @abc.abstractmethod
    async def replace(self, session: Session) -> bool:
        """Overwrite only if the record still exists (so a refresh cannot resurrect a
        revoked session). Publishes an invalidation. Returns whether it was written."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> None:
        """Delete the record and publish an invalidation for it."""

    @abc.abstractmethod
    async def touch(self, session_id: str, at: float) -> None:
        """Record activity at ``at`` (for the idle timeout), without rewriting the record."""

    async def list_sessions(self, limit: int) -> list[Session] | None:
        """Up to ``limit`` live sessions, most recently seen first (for the console);
        ``None`` when this store cannot list them."""
        return None

    # -- coordination ------------------------------------------------------------------
    @abc.abstractmethod
    async def consume_once(self, key: str, ttl_s: float) -> bool:
        """Atomically mark ``key`` used for ``ttl_s``; ``True`` only for the first caller."""

    @abc.abstractmethod
    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        """Take the lease ``name`` for ``ttl_s``; a token to release it, or ``None`` if held."""

    @abc.abstractmethod
    async def release_lock(self, name: str, token: str) -> None:
        """Release ``name`` if ``token`` still holds it (an expired lease may be someone else's)."""

    # -- invalidation -------------------------------------------------------------------
    def revocation_stamp(self) -> SharedStamp | None:
        """The machine-wide stamp this store changes after each revocation, if it has one
        (see :mod:`.stamp`); ``None``: revocations arrive only through listeners."""
        return None

    def changes_confirmed_at(self) -> float:
        """The latest ``time.monotonic()`` reading before which every change (delete,
        replace) committed by any process or replica has been delivered to the listeners;
        ``-inf`` when the store cannot tell (cached records then age out by time alone)."""
        return -math.inf

    async def catch_up(self) -> None:  # noqa: B027 - optional hook
        """Deliver to listeners every invalidation the store already holds (called when the
        stamp changed, before a cached session is trusted)."""

    def add_invalidation_listener(self, listener: InvalidationListener) -> None:
        self._listeners.append(listener)

    def remove_invalidation_listener(self, listener: InvalidationListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, session_id: str | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(session_id)
            except Exception:  # a broken listener must not stop delivery to the others
                log.exception("session invalidation listener failed")

    # -- helpers for subclasses -------------------------------------------------------------
    def _decode(self, text: str | bytes, last_seen_at: float) -> Session | None:
        try:
            return self._records.loads(text, last_seen_at=last_seen_at)
        except CorruptRecord as exc:
            # Fail closed: an unreadable record (e.g. written with another cookie_secret)
            # is no session at all.
            log.warning("unreadable session record ignored: %s", exc)
            return None
