"""Validate a changed config as a whole, write it, and wait for the running gatehouse to load it.

A change is accepted only when the whole new text passes what ``gatehouse check`` runs
(the loader, then :func:`~gatehouse.preflight.startup_problems`), so the console can never
write a config the proxy would refuse. Problems are the loader's located messages
(``gatehouse.yaml:12: routes[1].to: …``) and are mapped back to the editor field they
are about. After the write the worker is asked to reload (as SIGHUP does) and the console
waits until the serving process runs the new config's digest.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.loader import LoadedConfig, load_text, parse_loc
from ..errors import ConfigError
from .forms import FIELDS_BY_KEY, PROBLEM_FIELD

#: Longest wait for the serving process to run the new config after a write, seconds.
RELOAD_WAIT_S = 10.0
_RELOAD_POLL_S = 0.05
#: A problem's leading key, after its ``<source>:<line>: `` prefix.
_KEY = re.compile(r"(?P<key>[A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_][\w/-]*)*): ")


@dataclass
class Validation:
    """The outcome of checking a new config text."""

    loaded: LoadedConfig | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.loaded is not None and not self.problems


def parse_only(text: str, source: str) -> Validation:
    """The loader's checks alone (fast: for dry runs)."""
    try:
        return Validation(load_text(text, source))
    except ConfigError as exc:
        return Validation(None, list(exc.problems))


def _full_check(text: str, source: str) -> Validation:
    from ..preflight import startup_problems

    result = parse_only(text, source)
    if result.loaded is None:
        return result
    return Validation(result.loaded, startup_problems(result.loaded, scratch_data_dir=True))


async def validate(text: str, source: str) -> Validation:
    """Everything ``gatehouse check`` reports for ``text`` (run off the event loop: it
    reads files, derives keys and builds a state as a worker would)."""
    return await asyncio.to_thread(_full_check, text, source)


def problem_key(problem: str, source: str) -> tuple[str | int, ...] | None:
    """The key path a located problem is about, or ``None``."""
    rest = problem
    if rest.startswith(source + ":"):
        rest = rest[len(source) + 1 :]
        line, sep, after = rest.partition(": ")
        rest = after if sep and line.strip().isdigit() else rest.lstrip()
    match = _KEY.match(rest.lstrip())
    if match is None:
        return None
    try:
        return parse_loc(match["key"])
    except ValueError:
        return None


def by_field(
    problems: list[str], source: str, slot: tuple[str, int] | None
) -> tuple[dict[str, list[str]], list[str]]:
    """Split problems into those shown beside an editor field and the rest."""
    fields: dict[str, list[str]] = {}
    general: list[str] = []
    for problem in problems:
        loc = problem_key(problem, source)
        name: str | None = None
        if loc and slot is not None and len(loc) > 2 and tuple(loc[:2]) == slot:
            key = str(loc[2])
            name = PROBLEM_FIELD.get(key, key)
        elif (
            loc
            and len(loc) >= 1
            and loc[0] in FIELDS_BY_KEY
            and FIELDS_BY_KEY[str(loc[0])].global_key
        ):
            name = str(loc[0])
        if name is not None and (name in FIELDS_BY_KEY or name == "match"):
            fields.setdefault(name, []).append(problem)
        else:
            general.append(problem)
    return fields, general


async def wait_for_digest(current: Callable[[], str] | None, digest: str) -> bool:
    """Wait until the serving process runs ``digest``; ``False`` after :data:`RELOAD_WAIT_S`."""
    if current is None:
        return False
    deadline = time.monotonic() + RELOAD_WAIT_S
    while current() != digest:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_RELOAD_POLL_S)
    return True
