"""Policy clauses indexed by the user facts they need, so that a signed-in request is
checked only against the clauses that could match it.

A policy of 200 ``allow: {or: [{email: {is: ...}}]}`` rules costs 200 criterion calls per
request if every clause is tried. Most clauses name the user exactly — an email, a user
id, a domain, a group — and cannot match anyone else. Each clause gets a *guard*: a set
of keys such as ``("email", "alice@example.com")`` or ``("groups", "admins")``, one of
which a session must have for the clause to match, or no guard when none is known. A
request looks up its own keys (its email, user id, domain and each group) and evaluates
the guarded clauses found plus the unguarded ones, stopping at the first match.

Guards (necessary conditions, never sufficient: a candidate is still evaluated):

- ``email``/``user``/``domain`` with a string ``is`` (or a bare string) or ``in`` list;
- ``groups`` with a string ``has`` or ``is`` (or a bare string);
- an ``and`` clause takes the guard of its first guarded criterion (all must hold);
- an ``or`` clause has a guard only when every criterion has one (their union);
- ``not``/``nor`` clauses are never guarded (a negation matches the unnamed).

This is only sound for deciding the *outcome* of a request with a session: without one,
user criteria answer "sign in first", which every clause can contribute to
(:meth:`gatehouse.authorize.policy.Policy.evaluate` evaluates all clauses then).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..sessions.model import Session
from .criteria import Criterion
from .input import PolicyInput

#: ``(criterion name, value)`` a session has, e.g. ``("groups", "admins")``.
Key = tuple[str, str]

_AND, _OR, _NOT, _NOR = 0, 1, 2, 3
_STRING_CRITERIA = ("email", "user", "domain")


def criterion_keys(name: str, sub_path: str, data: Any) -> frozenset[Key] | None:
    """Keys one of which a session must have for the criterion to hold (``None``: unknown)."""
    if sub_path:
        return None
    if name in _STRING_CRITERIA:
        values = _string_values(data)
    elif name == "groups":
        values = _list_values(data)
    else:
        return None
    return None if values is None else frozenset((name, v) for v in values)


def _string_values(data: Any) -> frozenset[str] | None:
    # A string matcher: a bare value means `is`; every operator of an object must hold.
    if isinstance(data, str):
        return frozenset((data,))
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("is"), str):
        return frozenset((data["is"],))
    items = data.get("in")
    if isinstance(items, list) and items and all(isinstance(v, str) for v in items):
        return frozenset(items)
    return None


def _list_values(data: Any) -> frozenset[str] | None:
    # A list matcher: a bare value means `has`; `is` (exactly that one) implies `has`.
    if isinstance(data, str):
        return frozenset((data,))
    if not isinstance(data, dict):
        return None
    for op in ("has", "is"):
        if isinstance(data.get(op), str):
            return frozenset((data[op],))
    return None


def clause_guard(op: int, keys: Sequence[frozenset[Key] | None]) -> frozenset[Key] | None:
    """The guard of a clause from its criteria's keys (see the module docstring)."""
    if op == _AND:
        for k in keys:
            if k is not None:
                return k
        return None
    if op == _OR and keys and all(k is not None for k in keys):
        union: set[Key] = set()
        for k in keys:
            if k is not None:
                union |= k
        return frozenset(union)
    return None


def session_keys(session: Session) -> list[Key]:
    """The keys a session has, read exactly as the criteria read them."""
    keys: list[Key] = [("email", session.email), ("user", session.user_id)]
    parts = session.email.split("@")  # the domain criterion's reading (criteria/user.py)
    if len(parts) > 1:
        keys.append(("domain", parts[1]))
    for group in session.groups:
        keys.append(("groups", group))
    return keys


def clause_matches(op: int, crits: tuple[Criterion, ...], inp: PolicyInput) -> bool:
    """Whether one clause matches; the same value as the full evaluator's, short-circuited."""
    if len(crits) == 1:
        return crits[0](inp)[0] is (op <= _OR)
    if op == _AND:
        for c in crits:
            if not c(inp)[0]:
                return False
        return True
    if op == _OR:
        for c in crits:
            if c(inp)[0]:
                return True
        return False
    if op == _NOT:
        for c in crits:
            if c(inp)[0]:
                return False
        return True
    for c in crits:  # nor: not all
        if not c(inp)[0]:
            return True
    return False


class SideIndex:
    """The clauses of one side (allow or deny): unguarded ones, and guarded ones by key."""

    __slots__ = ("_by_key", "_crits", "_open", "_ops")

    def __init__(
        self,
        clauses: Iterable[tuple[int, tuple[Criterion, ...], frozenset[Key] | None]],
    ) -> None:
        """``clauses``: ``(operator code, criteria, guard)`` in policy order."""
        self._ops: list[int] = []
        self._crits: list[tuple[Criterion, ...]] = []
        by_key: dict[Key, list[int]] = {}
        open_: list[int] = []
        for pos, (op, crits, guard) in enumerate(clauses):
            self._ops.append(op)
            self._crits.append(crits)
            if guard is None:
                open_.append(pos)
            else:
                for key in guard:
                    by_key.setdefault(key, []).append(pos)
        self._open = tuple(open_)
        self._by_key = {k: tuple(v) for k, v in by_key.items()}

    def any_match(self, inp: PolicyInput, keys: list[Key] | None) -> bool:
        """Whether some clause of this side matches ``inp`` (``keys``: the session's)."""
        ops, crits = self._ops, self._crits
        for pos in self._open:
            if clause_matches(ops[pos], crits[pos], inp):
                return True
        if keys is not None and self._by_key:
            by_key = self._by_key
            for key in keys:
                found = by_key.get(key)
                if found is not None:
                    for pos in found:
                        if clause_matches(ops[pos], crits[pos], inp):
                            return True
        return False

    @property
    def guarded(self) -> bool:
        return bool(self._by_key)
