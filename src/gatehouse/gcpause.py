"""Keep Python's cyclic garbage collector off the objects of a config.

Loading and compiling a config allocates hundreds of thousands of objects that all stay
alive (10,000 routes: nodes, models, compiled routes and policies). Each allocation burst
triggers collections that scan every tracked object again, so building grows faster than
the config: with the collector running, 10,000 routes took ~2.5x as long to compile.
Nothing built here is garbage until the next reload, so collecting meanwhile is wasted;
reference counting still frees what is dropped, and the collector resumes afterwards.

Once a state is serving, :func:`freeze_survivors` moves it out of the collector's sight
(``gc.freeze``), so the full collections that request garbage triggers scan only what
requests made, not 10,000 routes (a full pass over the young state after a reload stalled
every request for tens of ms). Frozen objects are still freed by reference counting; what
freezing would leak is a *cycle* that becomes garbage later. A replaced state is acyclic
(tests/proxy/test_reload_gc.py proves it for the configs it builds), so its exclusive
parts are freed as soon as the last request using it ends.

A reload (:func:`reload_collector`) collects *before* it starts, when what is not frozen is
only what requests left since the last freeze, keeps the collector off while it loads,
builds and swaps in slices, and then freezes without collecting again
(:func:`freeze_reloaded`). Collecting after the build, as :func:`freeze_survivors` does,
scans every object the reload made while requests wait: ~3-9 ms when one route of 10,000
changed, 80-260 ms when all were compiled again. Loading and building make no cyclic
garbage (the collection that followed them found none), so what this freezes beyond the
new state is only cyclic garbage that requests made during the reload: measured under
20,000 requests/s, 17-69 objects per reload (kept for good: a few KB), where the skipped
collection would have cost 2-6 ms.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def start_up_without_collector() -> None:
    """Turn the cyclic collector off for a command's start-up (``run``, ``check``).

    Everything start-up builds lives on (libraries, the config, its state): collecting
    while it grows only rescans it (with 10,000 routes, the passes the collector made
    as soon as each load and build ended cost ~0.2 s of start-up). ``run``'s worker
    turns it back on with :func:`freeze_start_up` once it serves.
    """
    gc.disable()


def freeze_start_up() -> None:
    """Freeze all that start-up made, without a collection first, and turn the collector
    on: the little cyclic garbage start-up left is kept once (it does not grow), instead
    of a full pass over everything before the first request is answered."""
    gc.freeze()
    gc.enable()


def freeze_survivors() -> None:
    """Collect what is garbage now, then freeze everything alive (start-up, each reload).

    The collection scans only what is not frozen yet: the new state's own objects (a
    reload reuses unchanged routes, already frozen) and requests' survivors.
    """
    gc.collect()
    gc.freeze()


def exit_without_collection() -> None:
    """Keep everything alive now out of the interpreter's final collection (a command
    about to exit, ``check``).

    At exit the interpreter runs one full collection whether or not the collector is
    enabled: with 10,000 routes built, it scanned them all for ~0.4 s after the verdict
    was printed. Frozen objects are skipped by it; the process ends right after, so
    nothing is kept longer than it would have been.
    """
    gc.freeze()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block (nesting is fine)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class ReloadTimes:
    """What the collector's part of one reload cost, seconds."""

    collect_s: float = 0.0
    freeze_s: float = 0.0


@contextmanager
def reload_collector() -> Iterator[ReloadTimes]:
    """Collect what is garbage now, then keep the collector off for the block (a reload)
    and turn it back on after it, however it ends."""
    times = ReloadTimes()
    was_enabled = gc.isenabled()
    started = time.perf_counter()
    gc.collect()
    times.collect_s = time.perf_counter() - started
    gc.disable()
    try:
        yield times
    finally:
        if was_enabled:
            gc.enable()


def freeze_reloaded(times: ReloadTimes) -> None:
    """Freeze everything alive after a reload's swap, without a collection first (see the
    module's docstring); the cost goes to ``times``."""
    started = time.perf_counter()
    gc.freeze()
    times.freeze_s = time.perf_counter() - started
