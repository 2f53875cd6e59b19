"""Slow down password guessing: per-username and per-client-address backoff.

Theory of operation: every failed sign-in adds one to two counters, one keyed by the
(lower-cased) username tried and one by the client address, each living ``window_s``
after its first failure. Once a counter passes its ``free`` allowance, each further
failure locks that key for ``base_delay_s * 2**(excess - 1)`` seconds (capped at
``max_delay_s``). While either key is locked an attempt is refused *before* the password
is checked, with the seconds to wait. A successful sign-in clears the username counter
only: clearing the address counter would let one known account launder guesses.

Counters live in the IdP's :class:`~.store.StateStore`, so every worker sees them. The
read-modify-write is not atomic across workers; a race loses at most a failure or two,
which only makes the backoff a step shorter.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .store import StateStore


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How many failures are free and how fast the delay grows."""

    #: Failures per username within the window before delays start.
    user_free_failures: int = 5
    #: Failures per client address within the window before delays start (NAT: larger).
    address_free_failures: int = 20
    #: Counting window after the first failure, seconds.
    window_s: float = 15 * 60.0
    #: First delay once the allowance is used up, seconds; doubles with each failure.
    base_delay_s: float = 1.0
    #: Longest delay, seconds.
    max_delay_s: float = 15 * 60.0

    def delay_for(self, failures: int, free: int) -> float:
        excess = failures - free
        if excess <= 0:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(excess - 1, 60))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an attempt may proceed, and if not for how many whole seconds to wait."""

    allowed: bool
    retry_after_s: int = 0


class LoginThrottle:
    """Failure counters and lockouts, kept in a :class:`StateStore`."""

    def __init__(
        self,
        store: StateStore,
        policy: ThrottlePolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy or ThrottlePolicy()
        self._clock = clock

    @staticmethod
    def _user_key(username: str) -> str:
        # Hashed: the store should not become a list of every name anyone typed.
        return "thr:u:" + hashlib.sha256(username.strip().lower().encode()).hexdigest()

    @staticmethod
    def _address_key(address: str) -> str:
        return "thr:a:" + hashlib.sha256(address.encode()).hexdigest()

    async def _load(self, key: str) -> tuple[int, float, float]:
        """(failures, window start, locked until)."""
        raw = await self.store.get(key)
        if raw is None:
            return 0, 0.0, 0.0
        try:
            n, start, until = json.loads(raw)
            return int(n), float(start), float(until)
        except (ValueError, TypeError):
            return 0, 0.0, 0.0

    async def check(self, username: str, address: str) -> Verdict:
        """May this attempt proceed? (Call before checking the password.)"""
        now = self._clock()
        wait = 0.0
        for key in (self._user_key(username), self._address_key(address)):
            _, _, until = await self._load(key)
            wait = max(wait, until - now)
        if wait > 0:
            return Verdict(False, max(1, math.ceil(wait)))
        return Verdict(True)

    async def failed(self, username: str, address: str) -> Verdict:
        """Record a failure; the verdict says how long the next attempt must wait."""
        now = self._clock()
        p = self.policy
        wait = 0.0
        for key, free in (
            (self._user_key(username), p.user_free_failures),
            (self._address_key(address), p.address_free_failures),
        ):
            n, start, until = await self._load(key)
            if n == 0 or now - start > p.window_s:
                n, start = 0, now
            n += 1
            delay = p.delay_for(n, free)
            until = max(until, now + delay) if delay else until
            # Keep the record at least as long as its lock or its window.
            ttl = max(start + p.window_s, until) - now
            await self.store.put(key, json.dumps([n, start, until]), max(ttl, 1.0))
            wait = max(wait, until - now)
        return Verdict(wait <= 0, max(1, math.ceil(wait)) if wait > 0 else 0)

    async def succeeded(self, username: str) -> None:
        """Clear the username's counter after a correct password."""
        await self.store.take(self._user_key(username))


__all__ = ["LoginThrottle", "ThrottlePolicy", "Verdict"]
