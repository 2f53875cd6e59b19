"""The shared session store for several replicas: Redis (``redis://``, ``rediss://``, ``unix://``).

Keys (``prefix`` defaults to ``gatehouse:``), each with a TTL so Redis forgets for us::

    {prefix}s:{id}        the record (JSON, tokens encrypted), expires at the session's expiry
    {prefix}seen:{id}     last activity (idle timeout), same expiry; apart so a touch never
                          overwrites a concurrent refresh
    {prefix}once:{key}    one-shot keys, SET NX PX
    {prefix}lock:{name}   leases, SET NX PX token; released by compare-and-delete (Lua)
    {prefix}invalidate    pub/sub channel carrying session ids

A background task holds the subscription. If it drops (Redis restarted, network), the
task reconnects with backoff and, once subscribed again, tells listeners to drop
everything: messages published meanwhile are lost, so nothing cached can be trusted.

Every :data:`FEED_PROBE_INTERVAL_S` the task sends a PING on the subscribed connection.
Redis answers in order with the messages it pushes there, so its PONG proves that every
invalidation published before the PING has been received (the store's
:meth:`~.store.SessionStore.changes_confirmed_at`); a PING unanswered for
:data:`FEED_PROBE_TIMEOUT_S` means the connection is dead even if no error says so (a
silent network partition), and the task reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import ServiceUnavailable
from .model import Session
from .serialize import RecordCodec
from .store import SessionStore

log = logging.getLogger("gatehouse.sessions")

T = TypeVar("T")

#: Fail fast when Redis is down rather than hold requests (seconds).
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 2.0
#: Most session keys one console listing reads (SCAN is bounded so a huge store costs one page).
LIST_SCAN_MAX = 2000
#: How often the subscription proves it is live and caught up (PING/PONG), seconds.
FEED_PROBE_INTERVAL_S = 1.0
#: A PING on the subscription unanswered this long: reconnect (seconds).
FEED_PROBE_TIMEOUT_S = 3.0
#: Longest pause between resubscribe attempts (seconds).
MAX_RESUBSCRIBE_BACKOFF_S = 2.0

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl) end
return 1
"""


class RedisStore(SessionStore):
    """A :class:`SessionStore` on Redis, shared by every replica."""

    def __init__(
        self,
        url: str,
        records: RecordCodec,
        *,
        prefix: str = "gatehouse:",
        client: aioredis.Redis | None = None,
    ) -> None:
        super().__init__(records)
        self._prefix = prefix
        self._channel = f"{prefix}invalidate"
        # One immediate retry on a connection error: after a Redis restart every pooled
        # connection is dead, and each would otherwise fail one request with a 503.
        self._redis: aioredis.Redis = client or aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"redis session store: {type(exc).__name__}") from exc

    def _k(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the invalidation subscriber; waits until it is subscribed.

        Raises:
            ServiceUnavailable: Redis cannot be reached now (the subscriber keeps trying).
        """
        if self._subscriber is None:
            self._subscriber = asyncio.create_task(
                self._subscribe_loop(), name="gatehouse-redis-sub"
            )
        try:
            await asyncio.wait_for(self._subscribed.wait(), CONNECT_TIMEOUT_S + SOCKET_TIMEOUT_S)
        except TimeoutError as exc:
            raise ServiceUnavailable("redis session store: cannot subscribe") from exc

    async def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
            self._subscriber = None
        await self._redis.aclose()

    async def ping(self) -> None:
        await self._call(self._redis.ping)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    # -- records ----------------------------------------------------------------------------
    async def get(self, session_id: str) -> Session | None:
        values: list[Any] = await self._call(
            lambda: self._redis.mget(self._k("s", session_id), self._k("seen", session_id))
        )
        record, seen = values
        if record is None:
            return None
        return self._decode(record, float(seen) if seen is not None else 0.0)

    async def put(self, session: Session) -> None:
        await self._write(session, xx=False)

    async def list_sessions(self, limit: int) -> list[Session] | None:
        # SCAN, not KEYS: it never blocks Redis; bounded so a huge store costs one page.
        match = self._k("s", "*")
        start = len(self._k("s", ""))

        async def scan() -> list[str]:
            ids: list[str] = []
            async for key in self._redis.scan_iter(match=match, count=500):
                name = key.decode() if isinstance(key, bytes) else str(key)
                ids.append(name[start:])
                if len(ids) >= LIST_SCAN_MAX:
                    break
            return ids

        ids = await self._call(scan)
        if not ids:
            return []
        keys = [k for i in ids for k in (self._k("s", i), self._k("seen", i))]
        values: list[Any] = await self._call(lambda: self._redis.mget(keys))
        found = []
        for n in range(len(ids)):
            record, seen = values[2 * n], values[2 * n + 1]
            if record is not None:
                session = self._decode(record, float(seen) if seen is not None else 0.0)
                if session is not None:
                    found.append(session)
        found.sort(key=lambda s: s.last_seen_at, reverse=True)
        return found[:limit]

    async def replace(self, session: Session) -> bool:
        written = await self._write(session, xx=True)
        if written:
            await self._publish(session.id)
        return written

    async def _write(self, session: Session, *, xx: bool) -> bool:
        exat = math.ceil(session.expires_at)
        text = self._records.dumps(session)
        key = self._k("s", session.id)
        result = await self._call(lambda: self._redis.set(key, text, exat=exat, xx=xx))
        if result and not xx and session.last_seen_at:
            await self.touch(session.id, session.last_seen_at)
        return bool(result)

    async def delete(self, session_id: str) -> None:
        await self._call(
            lambda: self._redis.delete(self._k("s", session_id), self._k("seen", session_id))
        )
        await self._publish(session_id)

    async def touch(self, session_id: str, at: float) -> None:
        keys = (self._k("s", session_id), self._k("seen", session_id))
        await self._call(lambda: self._redis.eval(_TOUCH, 2, *keys, repr(at)))

    async def _publish(self, session_id: str) -> None:
        await self._call(lambda: self._redis.publish(self._channel, session_id))
        # Our own subscriber will echo this back too; notifying now makes local effect immediate.
        self._notify(session_id)

    # -- coordination ---------------------------------------------------------------------
    async def consume_once(self, key: str, ttl_s: float) -> bool:
        px = max(1, int(ttl_s * 1000))
        result = await self._call(
            lambda: self._redis.set(self._k("once", key), b"1", nx=True, px=px)
        )
        return bool(result)

    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        token = secrets.token_urlsafe(16)
        px = max(1, int(ttl_s * 1000))
        result = await self._call(
            lambda: self._redis.set(self._k("lock", name), token, nx=True, px=px)
        )
        return token if result else None

    async def release_lock(self, name: str, token: str) -> None:
        key = self._k("lock", name)
        await self._call(lambda: self._redis.eval(_RELEASE, 1, key, token))

    # -- invalidation subscription ----------------------------------------------------------
    def changes_confirmed_at(self) -> float:
        return self._confirmed_at

    async def _follow(self, pubsub: Any) -> None:
        """Deliver invalidations and probe the subscription until it fails.

        Raises:
            RedisError: the connection failed, or a probe went unanswered.
        """
        probes = 0
        probe: bytes | None = None  # the outstanding PING's payload
        probe_sent = last_probe = time.monotonic()
        while True:
            now = time.monotonic()
            if probe is None and now - last_probe >= FEED_PROBE_INTERVAL_S:
                probes += 1
                probe = b"gatehouse-feed-%d" % probes
                probe_sent = last_probe = now
                await pubsub.ping(probe)
            elif probe is not None and now - probe_sent > FEED_PROBE_TIMEOUT_S:
                raise RedisConnectionError("subscription did not answer PING")
            message = await pubsub.get_message(timeout=FEED_PROBE_INTERVAL_S / 2)
            if message is None:
                continue
            kind = message.get("type")
            data = message.get("data")
            if kind == "message":
                self._notify(data.decode() if isinstance(data, bytes) else str(data))
            elif kind == "pong" and probe is not None and data in (probe, probe.decode()):
                self._confirmed_at = max(self._confirmed_at, probe_sent)
                probe = None

    async def _subscribe_loop(self) -> None:
        backoff = 0.05
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                subscribing = time.monotonic()
                await pubsub.subscribe(self._channel)
                if not first:
                    self._notify(None)  # we may have missed messages while away
                first = False
                # Everything published from here on reaches us (and before: flushed above).
                self._confirmed_at = max(self._confirmed_at, subscribing)
                self._subscribed.set()
                backoff = 0.05
                await self._follow(pubsub)
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("session invalidation subscription lost: %s", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RESUBSCRIBE_BACKOFF_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    # Older redis releases leave aclose unannotated; newer ones annotate it.
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
