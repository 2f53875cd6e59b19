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

A reload builds the next index from the previous one (:func:`index_steps`): when the
routes are as many as before, only the host groups of the positions whose route object
changed are rebuilt (the others are shared, unchanged), so a reload that changes one route
of 10,000 costs one pass of identity comparisons and one group; otherwise every group is
regrouped, still keeping each group whose routes are the very same objects. Both are
generators that pause every few hundred routes, for a reload sliced on the event loop
(:mod:`gatehouse.timeslice`).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from typing import Generic, Protocol, TypeVar

from ..timeslice import drive

MATCH_ANY = 0
MATCH_PREFIX = 1
MATCH_PATH = 2
MATCH_REGEX = 3

#: Routes (or hosts) indexed between two points where a sliced reload may pause (~0.1 ms
#: of compiled work; the slicer reads the clock at each).
ROUTES_PER_STEP = 512
#: A reload patches the previous index when at most this share of the positions changed
#: (each changed route costs a group rebuilt); beyond, it regroups everything.
PATCH_MAX_CHANGED_SHARE = 0.25

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
    def host(self) -> str: ...
    @property
    def wildcard_suffix(self) -> str | None: ...
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
    """Every route, grouped by host; answers "the first route for (host, port, path)".

    Built by :func:`build_index` or :func:`index_steps`, from groups by exact host and by
    wildcard suffix (``.example.com``).
    """

    __slots__ = ("_exact", "_wild", "_wild_lengths")

    def __init__(self, exact: dict[str, HostGroup[R]], wild: dict[str, HostGroup[R]]) -> None:
        self._exact = exact
        self._wild = wild
        # Longest first does not matter for correctness; ascending keeps it deterministic.
        self._wild_lengths = tuple(sorted({len(s) for s in wild}))

    def groups(self) -> list[HostGroup[R]]:
        """Every host group (to free a replaced index a few at a time)."""
        return [*self._exact.values(), *self._wild.values()]

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


def build_index(
    routes: Sequence[R], previous: HostIndex[R] | None = None, previous_routes: Sequence[R] = ()
) -> HostIndex[R]:
    """The index of ``routes`` (see :func:`index_steps`), built at once."""
    return drive(index_steps(routes, previous, previous_routes))


def index_steps(
    routes: Sequence[R], previous: HostIndex[R] | None = None, previous_routes: Sequence[R] = ()
) -> Generator[None, None, HostIndex[R]]:
    """Build the index of ``routes`` (in config order, each ``index`` its position),
    pausing every :data:`ROUTES_PER_STEP` routes.

    ``previous`` and ``previous_routes``: the index of the config before and the routes it
    was built from. With as many routes as before, the groups of the positions whose route
    is another object are patched and every other group is shared; otherwise a host whose
    routes are the very same objects, in the same order, keeps its group.
    """
    if previous is not None and len(previous_routes) == len(routes):
        changed = yield from _changed_positions(routes, previous_routes)
        if changed is not None and len(changed) <= PATCH_MAX_CHANGED_SHARE * len(routes):
            return (yield from _patched(previous, routes, previous_routes, changed))
    return (yield from _regrouped(routes, previous))


def _changed_positions(
    routes: Sequence[R], previous: Sequence[R]
) -> Generator[None, None, list[int] | None]:
    """The positions whose route object differs from the previous one's, or ``None`` when
    a route's ``index`` is not its position (then patching would not be sound)."""
    changed: list[int] = []
    for i in range(len(routes)):
        if i % ROUTES_PER_STEP == ROUTES_PER_STEP - 1:
            yield
        route, old = routes[i], previous[i]
        if route.index != i or old.index != i:
            return None
        if route is not old:
            changed.append(i)
    return changed


def _patched(
    previous: HostIndex[R], routes: Sequence[R], previous_routes: Sequence[R], changed: list[int]
) -> Generator[None, None, HostIndex[R]]:
    """The previous index with the groups touched by ``changed`` positions rebuilt: each
    keeps its routes still at their position and gains the new routes of its host."""
    exact = dict(previous._exact)
    wild = dict(previous._wild)
    added_exact: dict[str, list[R]] = {}
    added_wild: dict[str, list[R]] = {}
    for i in changed:
        old, new = previous_routes[i], routes[i]
        # The old route's group loses it: touched, even when nothing is added to it.
        if old.wildcard_suffix is not None:
            added_wild.setdefault(old.wildcard_suffix, [])
        else:
            added_exact.setdefault(old.host, [])
        if new.wildcard_suffix is not None:
            added_wild.setdefault(new.wildcard_suffix, []).append(new)
        else:
            added_exact.setdefault(new.host, []).append(new)
    n = 0
    for table, added in ((exact, added_exact), (wild, added_wild)):
        for key, new_routes in added.items():
            n += 1
            if n % ROUTES_PER_STEP == 0:
                yield
            group = table.get(key)
            members = [r for r in group.routes if routes[r.index] is r] if group is not None else []
            members.extend(new_routes)
            if members:
                members.sort(key=_index)
                table[key] = HostGroup(members)
            else:
                table.pop(key, None)
    return HostIndex(exact, wild)


def _regrouped(
    routes: Sequence[R], previous: HostIndex[R] | None
) -> Generator[None, None, HostIndex[R]]:
    """Every route grouped again; a group whose routes are the same objects is kept."""
    exact: dict[str, list[R]] = {}
    wild: dict[str, list[R]] = {}
    for n, route in enumerate(routes):
        if n % ROUTES_PER_STEP == ROUTES_PER_STEP - 1:
            yield
        suffix = route.wildcard_suffix
        if suffix is not None:
            wild.setdefault(suffix, []).append(route)
        else:
            exact.setdefault(route.host, []).append(route)
    exact_groups = yield from _groups(exact, previous._exact if previous is not None else {})
    wild_groups = yield from _groups(wild, previous._wild if previous is not None else {})
    return HostIndex(exact_groups, wild_groups)


def _groups(
    by_key: dict[str, list[R]], previous: dict[str, HostGroup[R]]
) -> Generator[None, None, dict[str, HostGroup[R]]]:
    groups: dict[str, HostGroup[R]] = {}
    for n, (key, routes) in enumerate(by_key.items()):
        if n % ROUTES_PER_STEP == ROUTES_PER_STEP - 1:
            yield
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
