"""Route lookup whose cost does not grow with the number of routes.

Pomerium's rule is "the first route in config order whose host, port and path fit". A
linear scan gives that answer in time proportional to the routes; this index gives the
same answer with a few dictionary lookups:

1. **Host.** Routes are grouped by their ``from`` host: exact names in one dict, ``*.``
   wildcards in another keyed by the suffix (``.example.com``). A request's groups are its
   exact name and each of its suffixes whose length some wildcard has (so the number of
   lookups is bounded by the config, not by how many dots a client puts in Host).
2. **Port.** Within a group, one :class:`PathTable` per port a request can carry that
   changes the answer: each port some route names, and "no port" (the scheme's default
   port, RFC 9110 §7.2). Any other port sees only the routes without a port.
3. **Path.** A :class:`PathTable` holds its routes in config order and finds the first
   that fits: ``path`` rules in a dict by exact value, ``prefix`` rules in a dict by
   value probed once per distinct prefix length, the first catch-all route, and regexes
   tried only when the path starts with their literal prefix and only while they could
   still come first.

Each step keeps the earliest position found, so the result is exactly the linear scan's
(``tests/proxy/test_router.py`` checks it against one on generated configs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Generic, Protocol, TypeVar

MATCH_ANY = 0
MATCH_PREFIX = 1
MATCH_PATH = 2
MATCH_REGEX = 3

#: Routes (or hosts) indexed between two moments where the GIL is let go. Compiled code
#: never offers the GIL by itself: a reload building 10,000 routes in its thread held it
#: ~6 ms in one go, and every request waiting on the event loop waited that long.
GIL_YIELD_EVERY = 512

#: "No match yet": larger than any position in a table.
_NONE = 1 << 62

#: Characters that stand for themselves anywhere outside a character class (with the
#: default flags), so a regex starting with them only matches paths starting with them.
_LITERAL = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_~%=,;:@!&'\"<>"
)
#: Quantifiers that may repeat the preceding character zero times.
_MAY_SKIP = frozenset("*?{")
#: Placeholder at the positions of routes that are not regexes.
_NEVER = re.compile(r"(?!)")


class Matchable(Protocol):
    """What the index needs of a compiled route."""

    @property
    def index(self) -> int: ...
    @property
    def port(self) -> int | None: ...
    @property
    def default_port(self) -> int: ...
    @property
    def match_kind(self) -> int: ...
    @property
    def match_value(self) -> str: ...
    @property
    def match_regex(self) -> re.Pattern[str] | None: ...


R = TypeVar("R", bound=Matchable)


def literal_prefix(pattern: str) -> str:
    """A string every path that fully matches ``pattern`` starts with ("" when unsure).

    Conservative: it stops at the first character that is not plainly literal, drops the
    character before a quantifier that allows zero repeats, and gives up on any ``|``.
    """
    if "|" in pattern:
        return ""
    start = 1 if pattern.startswith("^") else 0
    end = start
    n = len(pattern)
    while end < n and pattern[end] in _LITERAL:
        end += 1
    if end < n and pattern[end] in _MAY_SKIP and end > start:
        end -= 1
    return pattern[start:end]


class PathTable(Generic[R]):
    """Routes already known to fit a host and port, in config order; finds the first
    whose path condition fits."""

    __slots__ = (
        "_exact",
        "_first_any",
        "_prefix_lengths",
        "_prefixes",
        "_regex_lengths",
        "_regex_literal",
        "_regex_open",
        "_regexes",
        "routes",
    )

    def __init__(self, routes: Sequence[R]) -> None:
        self.routes: tuple[R, ...] = tuple(routes)
        self._first_any = _NONE
        self._exact: dict[str, int] = {}
        self._prefixes: dict[str, int] = {}
        #: By position; a never-matching placeholder where the route is not a regex.
        self._regexes: list[re.Pattern[str]] = []
        self._regex_open: list[int] = []  # positions of regexes without a literal prefix
        literal: dict[str, list[int]] = {}
        for pos, route in enumerate(self.routes):
            kind = route.match_kind
            regex = route.match_regex if kind == MATCH_REGEX else None
            self._regexes.append(regex if regex is not None else _NEVER)
            if kind == MATCH_ANY:
                if self._first_any == _NONE:
                    self._first_any = pos
            elif kind == MATCH_PATH:
                self._exact.setdefault(route.match_value, pos)
            elif kind == MATCH_PREFIX:
                self._prefixes.setdefault(route.match_value, pos)
            elif regex is not None:
                lit = literal_prefix(route.match_value)
                if lit:
                    literal.setdefault(lit, []).append(pos)
                else:
                    self._regex_open.append(pos)
        self._prefix_lengths = tuple(sorted({len(p) for p in self._prefixes}))
        self._regex_literal: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in literal.items()}
        self._regex_lengths = tuple(sorted({len(p) for p in literal}))

    def __len__(self) -> int:
        return len(self.routes)

    def first(self, path: str) -> int:
        """The position of the first route whose path condition fits ``path`` (or a value
        ``>= len(self)`` when none does)."""
        best = self._first_any
        if best == 0:
            return 0
        found = self._exact.get(path)
        if found is not None and found < best:
            best = found
        if self._prefix_lengths:
            prefixes = self._prefixes
            size = len(path)
            for length in self._prefix_lengths:
                if length > size:
                    break
                found = prefixes.get(path[:length])
                if found is not None and found < best:
                    best = found
        if self._regex_open or self._regex_lengths:
            best = self._first_regex(path, best)
        return best

    def match(self, path: str) -> R | None:
        best = self.first(path)
        return self.routes[best] if best < len(self.routes) else None

    def _first_regex(self, path: str, best: int) -> int:
        candidates: list[int] = [p for p in self._regex_open if p < best]
        size = len(path)
        for length in self._regex_lengths:
            if length > size:
                break
            found = self._regex_literal.get(path[:length])
            if found is not None:
                candidates.extend(p for p in found if p < best)
        if not candidates:
            return best
        candidates.sort()
        regexes = self._regexes
        for pos in candidates:
            if regexes[pos].fullmatch(path) is not None:
                return pos
        return best


class HostGroup(Generic[R]):
    """The routes of one ``from`` host (exact name or wildcard), by the request's port."""

    __slots__ = ("_by_port", "_other_ports", "routes")

    def __init__(self, routes: Sequence[R]) -> None:
        self.routes: tuple[R, ...] = tuple(routes)
        ports = {r.port for r in routes if r.port is not None}
        self._other_ports: PathTable[R] = PathTable([r for r in routes if r.port is None])
        # No port in the request: the route's scheme's default port decides (RFC 9110 §7.2).
        self._by_port: dict[int | None, PathTable[R]] = {
            None: (
                PathTable([r for r in routes if r.port is None or r.port == r.default_port])
                if ports
                else self._other_ports  # no route names a port: one table serves all
            )
        }
        for port in ports:
            self._by_port[port] = PathTable([r for r in routes if r.port is None or r.port == port])

    def table(self, port: int | None) -> PathTable[R]:
        found = self._by_port.get(port)
        return found if found is not None else self._other_ports


class HostIndex(Generic[R]):
    """Every route, grouped by host; answers "the first route for (host, port, path)"."""

    __slots__ = ("_exact", "_wild", "_wild_lengths")

    def __init__(
        self, routes: Iterable[tuple[str, str | None, R]], previous: HostIndex[R] | None = None
    ) -> None:
        """``routes``: ``(exact host, wildcard suffix or None, route)`` in config order.

        ``previous``: the index of the config before; a host whose routes are the very
        same objects, in the same order, keeps its group (a reload that changes one route
        of 10,000 builds one group, not 10,000)."""
        exact: dict[str, list[R]] = {}
        wild: dict[str, list[R]] = {}
        for n, (host, suffix, route) in enumerate(routes):
            if n % GIL_YIELD_EVERY == GIL_YIELD_EVERY - 1:
                time.sleep(0)  # lets a waiting thread (the event loop) take the GIL
            if suffix is not None:
                wild.setdefault(suffix, []).append(route)
            else:
                exact.setdefault(host, []).append(route)
        self._exact: dict[str, HostGroup[R]] = _groups(
            exact, previous._exact if previous is not None else {}
        )
        self._wild: dict[str, HostGroup[R]] = _groups(
            wild, previous._wild if previous is not None else {}
        )
        # Longest first does not matter for correctness; ascending keeps it deterministic.
        self._wild_lengths = tuple(sorted({len(s) for s in wild}))

    def tables(self, host: str, port: int | None) -> list[PathTable[R]]:
        """The path tables that apply to ``host`` and ``port`` (disjoint sets of routes)."""
        out: list[PathTable[R]] = []
        group = self._exact.get(host)
        if group is not None:
            out.append(group.table(port))
        if self._wild_lengths:
            size = len(host)
            for length in self._wild_lengths:
                # A wildcard needs at least one character before its suffix.
                if length >= size:
                    break
                group = self._wild.get(host[size - length :])
                if group is not None:
                    out.append(group.table(port))
        return out

    def match(self, host: str, port: int | None, path: str) -> R | None:
        """The first route in config order fitting ``host``, ``port`` and ``path``."""
        if not self._wild_lengths:
            group = self._exact.get(host)
            return None if group is None else group.table(port).match(path)
        best: R | None = None
        for table in self.tables(host, port):
            found = table.match(path)
            if found is not None and (best is None or found.index < best.index):
                best = found
        return best

    def candidates(self, host: str, port: int | None) -> tuple[R, ...]:
        """Every route fitting ``host`` and ``port``, in config order."""
        routes = [r for t in self.tables(host, port) for r in t.routes]
        routes.sort(key=_index)
        return tuple(routes)

    def first_for_host(self, host: str, port: int | None) -> R | None:
        """The first route in config order fitting ``host`` and ``port``, any path."""
        best: R | None = None
        for table in self.tables(host, port):
            if table.routes and (best is None or table.routes[0].index < best.index):
                best = table.routes[0]
        return best


def _groups(
    by_key: dict[str, list[R]], previous: dict[str, HostGroup[R]]
) -> dict[str, HostGroup[R]]:
    groups: dict[str, HostGroup[R]] = {}
    for n, (key, routes) in enumerate(by_key.items()):
        if n % GIL_YIELD_EVERY == GIL_YIELD_EVERY - 1:
            time.sleep(0)
        old = previous.get(key)
        if old is None or not _same(old.routes, routes):
            old = HostGroup(routes)
        groups[key] = old
    return groups


def _same(old: tuple[R, ...], new: list[R]) -> bool:
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if a is not b:
            return False
    return True


def _index(route: Matchable) -> int:
    return route.index
