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
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


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
