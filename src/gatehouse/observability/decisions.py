"""The process's own tally of policy decisions, for the console's overview.

The pipeline records one entry per authorized request (route, user, decision) when the
console is on; the console reads the counts and the most recent entries. Each process
keeps its own tally (with ``workers`` > 1 the console shows the worker that served the
page), bounded so that many users cannot grow it without limit.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass

#: Most recent decisions kept.
RECENT_DECISIONS = 200
#: Most distinct (route, user, decision) counters kept; later ones are counted under
#: :data:`OTHER_USERS` (a flood of user names must not grow the process).
MAX_COUNTERS = 5000
OTHER_USERS = "(other users)"


@dataclass(frozen=True, slots=True)
class RecentDecision:
    at: float
    route: str
    user: str
    decision: str


class DecisionTally:
    """Counts of decisions by (route, user, decision), and the latest ones in order."""

    __slots__ = ("_recent", "counts")

    def __init__(self, recent: int = RECENT_DECISIONS) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._recent: deque[tuple[float, str, str, str]] = deque(maxlen=recent)

    def record(self, route: str, user: str | None, decision: str) -> None:
        """Count one decision (on the request path when the console is on: kept to a
        dict update and a deque append, well under a microsecond)."""
        who = user or "(anonymous)"
        key = (route, who, decision)
        counts = self.counts
        n = counts.get(key)
        if n is None and len(counts) >= MAX_COUNTERS:
            key = (route, OTHER_USERS, decision)
            n = counts.get(key)
        counts[key] = (n or 0) + 1
        self._recent.append((time.time(), route, who, decision))

    @property
    def recent(self) -> list[RecentDecision]:
        """The latest decisions, oldest first."""
        return [RecentDecision(*entry) for entry in self._recent]

    def by_route(self) -> list[tuple[str, int, int]]:
        """``(route, allowed, refused)`` per route, busiest first."""
        allow: Counter[str] = Counter()
        other: Counter[str] = Counter()
        for (route, _, decision), n in self.counts.items():
            (allow if decision == "allow" else other)[route] += n
        routes = set(allow) | set(other)
        return sorted(((r, allow[r], other[r]) for r in routes), key=lambda row: -(row[1] + row[2]))

    def routes_by_user(self) -> dict[str, list[str]]:
        """The routes each user was decided on (by name, busiest first)."""
        per: dict[str, Counter[str]] = {}
        for (route, user, _), n in self.counts.items():
            per.setdefault(user, Counter())[route] += n
        return {user: [r for r, _ in c.most_common()] for user, c in per.items()}

    def top(self, limit: int = 50) -> list[tuple[tuple[str, str, str], int]]:
        return self.counts.most_common(limit)
