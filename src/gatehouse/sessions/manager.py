"""SessionManager: cookie codec + per-process cache + store, and the session lifecycle.

Theory of operation:

* ``create`` writes a new record (random 256-bit id) and caches it; ``cookie_value``
  encodes the handle for one host. The cookie's max age and the record's ``expires_at``
  are both ``cookie_expire`` (absolute lifetime, never extended by a refresh).
* ``load`` decodes the cookie (``None`` on anything wrong), reads the record through the
  cache, and refuses it when expired or idle longer than ``session_idle_timeout``. Activity
  is written to the store at most once per ``touch_interval`` per session, in the
  background, so the hot path stays off the store.
* ``refresh_if_needed`` refreshes the IdP tokens shortly before they expire, once per
  session: concurrent callers in this process share one attempt, and across processes
  the store lease ``refresh:{id}`` picks one refresher while the others poll the store
  for its result. A failed refresh revokes the session.
* ``revoke`` deletes the record; the store publishes the invalidation to every cache.
  With a store that has a machine-wide revocation stamp (SQLite), every worker compares
  the stamp on its cached path (one memory read) and, when it changed, catches up on the
  store's invalidations before trusting its cache: a sign-out that has returned holds in
  every worker of the machine at once. Other replicas learn it by Redis pub/sub or
  PostgreSQL LISTEN/NOTIFY (the PostgreSQL store has the stamp too).
* ``issue_handoff``/``redeem_handoff`` move a session from the authenticate host to a
  route host in a short-lived, single-use, encrypted token bound to the route host and
  to the browser that started the sign-in.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..config import Options
from ..errors import ConfigError, ServiceUnavailable
from .backends import SHARED_TYPES, build_store
from .cache import SessionCache
from .cookie import CookieCodec, HandoffCodec, normalize_host
from .keys import SessionKeys, decode_secret, load_or_create_secret
from .model import Session
from .serialize import RecordCodec
from .stamp import SharedStamp
from .store import SessionStore

log = logging.getLogger("gatehouse.sessions")

Refresher = Callable[[Session], Awaitable[Session]]

#: Refresh this long before the IdP's tokens expire (seconds).
DEFAULT_REFRESH_SKEW_S = 60.0
#: Lease on a session's refresh; longer than any sane token request (seconds).
REFRESH_LOCK_TTL_S = 30.0
#: How long a process that lost the refresh race waits for the winner's result (seconds).
REFRESH_WAIT_S = 10.0
REFRESH_POLL_S = 0.05
#: Catch-up rounds a request makes while the revocation stamp keeps changing, before it
#: marks the whole cache stale instead (a storm of sign-outs must not hold it forever).
MAX_CATCH_UP_ROUNDS = 3
#: Lifetime of a handoff token (authenticate host -> route host), seconds.
HANDOFF_TTL_S = 60.0
#: File holding a generated cookie secret when none is configured (embedded default).
GENERATED_SECRET_FILE = "cookie_secret"  # noqa: S105 - a file name


class SessionManager:
    """The one object the request pipeline and the authenticate flow use for sessions."""

    def __init__(
        self,
        *,
        store: SessionStore,
        keys: SessionKeys,
        cookie_name: str = "_gatehouse",
        cookie_expire_s: float = 14 * 3600.0,
        idle_timeout_s: float = 0.0,
        cookie_domain: str | None = None,
        cache: SessionCache | None = None,
        refresh_skew_s: float = DEFAULT_REFRESH_SKEW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cookie_name = cookie_name
        self.cookie_expire_s = cookie_expire_s
        self.idle_timeout_s = idle_timeout_s
        self._cookie_domain = normalize_host(cookie_domain) if cookie_domain else None
        self._codec = CookieCodec(keys.cookie, cookie_name=cookie_name, max_age_s=cookie_expire_s)
        self._handoff = HandoffCodec(keys.handoff)
        self.cache = cache if cache is not None else SessionCache()  # empty cache is falsy
        self._refresh_skew_s = refresh_skew_s
        self._clock = clock
        # Write activity at most this often: a small fraction of the idle timeout.
        self._touch_interval_s = min(60.0, idle_timeout_s / 10) if idle_timeout_s > 0 else 0.0
        self._refreshing: dict[str, asyncio.Task[Session | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._touched: dict[str, float] = {}
        #: The store's revocation stamp (known once started) and its value when this
        #: process last caught up with the store.
        self._stamp: SharedStamp | None = None
        self._seen_stamp = 0
        self._catching_up: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe the cache to store invalidations and start the store's background work.

        Raises:
            ServiceUnavailable: the store cannot be reached.
        """
        self.store.add_invalidation_listener(self.cache.invalidate)
        self.cache.follow(self.store.changes_confirmed_at)
        try:
            await self.store.start()
        finally:
            # Nothing is cached before start, so the value now is the one caught up with.
            self._stamp = self.store.revocation_stamp()
            if self._stamp is not None:
                self._seen_stamp = self._stamp.read()

    async def close(self) -> None:
        self.store.remove_invalidation_listener(self.cache.invalidate)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()

    # -- cookies ----------------------------------------------------------------------------
    def cookie_value(self, session: Session | str, host: str, now: float | None = None) -> str:
        """The cookie value carrying ``session``'s handle for requests to ``host``."""
        session_id = session if isinstance(session, str) else session.id
        return self._codec.encode(session_id, self._binding(host), self._now(now))

    def cookie_max_age(self, session: Session, now: float | None = None) -> int:
        """Seconds until ``session`` expires, for the cookie's ``Max-Age``."""
        return max(0, math.floor(session.expires_at - self._now(now)))

    def _binding(self, host: str) -> str:
        # With cookie_domain the browser sends one cookie to every host under it, so the
        # handle is bound to that domain; otherwise to the exact host.
        h = normalize_host(host)
        d = self._cookie_domain
        if d and (h == d.lstrip(".") or h.endswith("." + d.lstrip("."))):
            return d
        return h

    # -- sessions ---------------------------------------------------------------------------
    async def create(
        self,
        *,
        user_id: str,
        email: str = "",
        name: str = "",
        groups: Sequence[str] = (),
        claims: Mapping[str, Any] | None = None,
        id_token: str = "",
        access_token: str = "",
        refresh_token: str = "",
        tokens_expire_at: float = 0.0,
        idp_id: str = "",
        now: float | None = None,
    ) -> Session:
        """Store a new session (expires ``cookie_expire`` from now) and cache it.

        Raises:
            ServiceUnavailable: the store is down.
        """
        t = self._now(now)
        session = Session(
            id=secrets.token_urlsafe(32),
            user_id=user_id,
            email=email,
            name=name,
            groups=tuple(groups),
            claims=MappingProxyType(dict(claims or {})),
            issued_at=t,
            expires_at=t + self.cookie_expire_s,
            last_refresh_at=t,
            last_seen_at=t,
            tokens_expire_at=tokens_expire_at,
            id_token=id_token,
            access_token=access_token,
            refresh_token=refresh_token,
            idp_id=idp_id,
        )
        await self.store.put(session)
        self.cache.put(session)
        return session

    async def load(self, cookie_value: str, host: str, now: float | None = None) -> Session | None:
        """The live session the cookie refers to, or ``None`` (bad cookie, gone, expired, idle).

        Raises:
            ServiceUnavailable: the store is down and the session is not cached.
        """
        t = self._now(now)
        handle = self._codec.decode(cookie_value, self._binding(host), t)
        if handle is None:
            return None
        return await self.get(handle.session_id, t)

    def load_cached(
        self, cookie_value: str, host: str, now: float | None = None
    ) -> tuple[bool, Session | None]:
        """:meth:`load` when the answer needs no store read: ``(True, session or None)``;
        ``(False, None)`` when it does (call :meth:`load`)."""
        t = self._now(now)
        handle = self._codec.decode(cookie_value, self._binding(host), t)
        if handle is None:
            return True, None
        stamp = self._stamp
        if stamp is not None and stamp.read() != self._seen_stamp:
            return False, None  # a revocation since we last looked: catch up in load()
        hit, session = self.cache.lookup(handle.session_id)
        if not hit:
            return False, None
        if session is not None and self._idle(session, handle.session_id, t):
            return False, None  # only the store knows the activity of other processes
        return True, self._live(session, handle.session_id, t)

    async def get(self, session_id: str, now: float | None = None) -> Session | None:
        """The live session with this id (no cookie involved), or ``None``."""
        t = self._now(now)
        stamp = self._stamp
        if stamp is not None and stamp.read() != self._seen_stamp:
            await self._catch_up(stamp)
        session = await self.cache.get(session_id, self.store.get)
        if session is not None and self._idle(session, session_id, t):
            # Idle by what this process saw; the user may have been active through other
            # workers or replicas since the record was cached: ask the store once.
            self.cache.expire(session_id)
            session = await self.cache.get(session_id, self.store.get)
        return self._live(session, session_id, t)

    async def _catch_up(self, stamp: SharedStamp) -> None:
        """Apply the store's invalidations up to the current stamp (one read per change of
        the stamp, shared by concurrent requests)."""
        for _ in range(MAX_CATCH_UP_ROUNDS):
            task = self._catching_up
            if task is None:
                task = asyncio.ensure_future(self._catch_up_once(stamp))
                self._catching_up = task
                task.add_done_callback(self._caught_up)
            await asyncio.shield(task)
            if stamp.read() == self._seen_stamp:
                return
        # Still changing: trust nothing cached without a store read (as after missed
        # invalidations), and stop chasing the stamp for this request.
        self._seen_stamp = stamp.read()
        self.cache.invalidate(None)

    async def _catch_up_once(self, stamp: SharedStamp) -> None:
        value = stamp.read()  # read before the store, so a later change is seen next time
        try:
            await self.store.catch_up()
        except ServiceUnavailable as exc:
            log.warning("could not catch up on session revocations: %s", exc)
            self.cache.invalidate(None)  # re-read (or the outage grace) decides instead
        self._seen_stamp = value

    def _caught_up(self, task: asyncio.Task[None]) -> None:
        if self._catching_up is task:
            self._catching_up = None
        if not task.cancelled():
            task.exception()  # retrieved here so a failure is not reported twice

    def _idle(self, session: Session, session_id: str, t: float) -> bool:
        """Whether ``session`` has been idle longer than the idle timeout as far as this
        process knows (its cached record and its own recent activity)."""
        if self.idle_timeout_s <= 0:
            return False
        last = max(session.last_seen_at, session.issued_at, self._touched.get(session_id, 0.0))
        return t - last > self.idle_timeout_s

    def _live(self, session: Session | None, session_id: str, t: float) -> Session | None:
        """``session`` unless expired or idle too long (recording activity when due)."""
        if session is None or session.is_expired(t):
            return None
        if self.idle_timeout_s > 0:
            last = max(session.last_seen_at, session.issued_at, self._touched.get(session_id, 0.0))
            if t - last > self.idle_timeout_s:
                return None
            if t - last >= self._touch_interval_s:
                self._touch(session_id, t)
        return session

    def _touch(self, session_id: str, at: float) -> None:
        self._touched[session_id] = at
        if len(self._touched) > 2 * max(1024, len(self.cache)):
            self._touched.clear()  # bounded; worst case a few extra touches
        self._spawn(self._touch_store(session_id, at))

    async def _touch_store(self, session_id: str, at: float) -> None:
        try:
            await self.store.touch(session_id, at)
        except ServiceUnavailable as exc:
            log.warning("could not record session activity: %s", exc)

    async def revoke(self, session_id: str) -> None:
        """End the session everywhere: delete it and invalidate every process's cache.

        Raises:
            ServiceUnavailable: the store is down (the session may still be alive).
        """
        self.cache.invalidate(session_id)
        await self.store.delete(session_id)

    # -- refresh ----------------------------------------------------------------------------
    def needs_refresh(self, session: Session, now: float | None = None) -> bool:
        """Whether the IdP tokens expire within the refresh skew and can be refreshed."""
        return bool(
            session.refresh_token
            and session.tokens_expire_at > 0
            and self._now(now) >= session.tokens_expire_at - self._refresh_skew_s
        )

    async def refresh_if_needed(
        self, session: Session, refresher: Refresher, now: float | None = None
    ) -> Session | None:
        """Return ``session`` with fresh tokens, refreshing once across all racers.

        ``refresher(session)`` talks to the IdP and returns the session with new tokens and
        ``tokens_expire_at`` (same id); it raises on failure. Only one call happens per
        session however many requests or processes race. A refresh the IdP refuses (any
        exception but ``ServiceUnavailable``) revokes the session and returns ``None``; so
        does a session revoked meanwhile. ``ServiceUnavailable`` from the refresher means
        "IdP unreachable": the session is kept and returned unchanged while its tokens
        are still valid, after that the error propagates (503).

        Raises:
            ServiceUnavailable: the store is down, or the IdP is and the tokens expired.
        """
        t = self._now(now)
        if not self.needs_refresh(session, t):
            return session
        task = self._refreshing.get(session.id)
        if task is None:
            task = asyncio.ensure_future(self._refresh(session, refresher, t))
            self._refreshing[session.id] = task
            task.add_done_callback(lambda _t: self._refreshing.pop(session.id, None))
        return await asyncio.shield(task)

    async def _refresh(self, session: Session, refresher: Refresher, now: float) -> Session | None:
        lock = f"refresh:{session.id}"
        token = await self.store.acquire_lock(lock, REFRESH_LOCK_TTL_S)
        if token is None:
            return await self._await_other_refresher(session)
        try:
            # Another process may have refreshed between our cache read and the lease.
            current = await self.store.get(session.id)
            if current is None or current.is_expired(now):
                self.cache.invalidate(session.id)
                return None
            if not self.needs_refresh(current, now):
                self.cache.put(current)
                return current
            try:
                fresh = await refresher(current)
            except ServiceUnavailable:
                # The IdP is unreachable, which says nothing about the user: keep the session
                # while its tokens are still valid (we refresh ahead of expiry), else 503.
                if now < current.tokens_expire_at:
                    log.warning("session refresh postponed: identity provider unavailable")
                    return current
                raise
            except Exception as exc:
                log.info("session refresh failed, ending session: %s", type(exc).__name__)
                await self.revoke(session.id)
                return None
            fresh = replace(
                fresh,
                id=current.id,
                issued_at=current.issued_at,
                expires_at=current.expires_at,
                last_refresh_at=self._clock(),
            )
            if not await self.store.replace(fresh):
                return None  # revoked while we refreshed: do not resurrect it
            self.cache.put(fresh)
            return fresh
        finally:
            try:
                await self.store.release_lock(lock, token)
            except ServiceUnavailable as exc:
                log.warning("could not release refresh lease (it will expire): %s", exc)

    async def _await_other_refresher(self, old: Session) -> Session | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REFRESH_WAIT_S
        while loop.time() < deadline:
            await asyncio.sleep(REFRESH_POLL_S)
            current = await self.store.get(old.id)
            if current is None:
                self.cache.invalidate(old.id)
                return None
            if current.last_refresh_at != old.last_refresh_at or not self.needs_refresh(current):
                self.cache.put(current)
                return current
        # The winner is slow; keep the session we have and let a later request retry.
        return old

    # -- handoff to a route host ------------------------------------------------------------
    def issue_handoff(
        self,
        session_id: str,
        target_host: str,
        binding: str,
        ttl_s: float = HANDOFF_TTL_S,
        now: float | None = None,
    ) -> str:
        """A token that ``target_host``'s ``/.pomerium/callback/`` may redeem once, in the
        browser whose sign-in binding cookie hashes to ``binding``."""
        return self._handoff.seal(session_id, target_host, binding, ttl_s, self._now(now))

    async def redeem_handoff(
        self, token: str, host: str, binding: str, now: float | None = None
    ) -> Session | None:
        """The live session in ``token`` if it is authentic, for ``host`` and ``binding``,
        unexpired and unused; ``None`` otherwise (including the second use).

        Raises:
            ServiceUnavailable: the store is down.
        """
        t = self._now(now)
        claim = self._handoff.open(token, host, binding, t)
        if claim is None:
            return None
        if not await self.store.consume_once(f"handoff:{claim.token_id}", claim.expires_at - t + 1):
            return None
        return await self.get(claim.session_id, t)

    async def consume_once(self, key: str, ttl_s: float) -> bool:
        """First-use-wins for any key (OIDC ``state``, authorization codes)."""
        return await self.store.consume_once(key, ttl_s)

    # -- internals --------------------------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def session_keys_from_options(options: Options) -> SessionKeys:
    """Derive the session keys from ``cookie_secret``/``cookie_secret_file``.

    Without either, the embedded stores use a secret generated once into ``data_dir``
    (so restarts and sibling workers agree); the shared stores (Redis, PostgreSQL)
    require a configured one, since replicas on other machines must share it.

    Raises:
        ConfigError: malformed secret, or a shared store without one.
    """
    if options.cookie_secret:
        return SessionKeys.from_secret(decode_secret(options.cookie_secret))
    if options.cookie_secret_file:
        try:
            text = Path(options.cookie_secret_file).expanduser().read_text()
        except OSError as exc:
            raise ConfigError([f"cookie_secret_file: cannot read ({exc.strerror})"]) from exc
        return SessionKeys.from_secret(decode_secret(text, name="cookie_secret_file"))
    if options.databroker_storage_type in SHARED_TYPES:
        kind = options.databroker_storage_type
        raise ConfigError([f"cookie_secret is required with databroker_storage_type: {kind}"])
    if options.databroker_storage_type == "memory":
        return SessionKeys.from_secret(secrets.token_bytes(32))
    path = Path(options.data_dir).expanduser() / GENERATED_SECRET_FILE
    return SessionKeys.from_secret(load_or_create_secret(path))


def build_session_manager(
    options: Options,
    *,
    clock: Callable[[], float] = time.time,
    wrap_store: Callable[[SessionStore], SessionStore] | None = None,
) -> SessionManager:
    """A :class:`SessionManager` with the store ``databroker_storage_type`` names.

    Call ``await manager.start()`` inside the event loop before use, ``close()`` at exit.

    Raises:
        ConfigError: bad secret or storage settings.
    """
    keys = session_keys_from_options(options)
    records = RecordCodec(keys.tokens)
    store = build_store(options, records, clock=clock)
    if wrap_store is not None:
        store = wrap_store(store)  # e.g. timing every call for the metrics
    return SessionManager(
        cache=SessionCache(
            stale_grace_s=options.session_store_outage_grace,
            max_bytes=options.session_cache_max_bytes,
            max_age_s=options.session_cache_max_age,
        ),
        store=store,
        keys=keys,
        cookie_name=options.cookie_name,
        cookie_expire_s=options.cookie_expire,
        idle_timeout_s=options.session_idle_timeout,
        cookie_domain=options.cookie_domain,
        clock=clock,
    )
