"""Where in a route's policy a problem was found, and the internal error that carries it.

:class:`PolicySyntaxError` never leaves :mod:`gatehouse.authorize`: the compiler collects
them and raises one :class:`gatehouse.errors.ConfigError` listing every problem, each
prefixed with its key path (``routes[3].policy[0].allow.or[1].email``) so that the config
loader can add the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A key path inside one route, e.g. ``("policy", 0, "allow", "or", 1, "email")``.
Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("policy", 0, "allow")`` -> ``policy[0].allow`` (the loader's notation)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One problem in a route's policy options."""

    route_index: int
    #: Key path inside the route (``("policy", 0, "allow", "or", 1, "email")``).
    loc: Loc
    message: str

    def __str__(self) -> str:
        where = format_loc(("routes", self.route_index, *self.loc))
        return f"{where}: {self.message}"


class PolicySyntaxError(Exception):
    """A problem found while compiling one criterion or matcher (internal)."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
