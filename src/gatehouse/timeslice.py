"""Run long CPU-bound work on the event loop in short slices, answering requests between.

Theory of operation: the work is written as a generator that ``yield``\\ s wherever it may
pause (after each route compiled, every few hundred YAML events): each yield is a point
where a slice may end, and costs only a clock read. :class:`Slicer` steps the generator
until ``slice_s`` of clock time has gone by, then returns. Between slices,
:func:`run_sliced` gives the loop turns (``asyncio.sleep(0)``): one, and more as long as
the last one found work (took longer than ``idle_turn_s``), up to ``max_pause_s`` in all.
A request takes several turns (its bytes arrive, its task starts, the upstream answers,
the task resumes...), so one turn per slice would make it wait a slice per turn; with the
loop run until idle it waits about one slice, and with no requests the work loses almost
nothing. That is instead of the whole work (run on the loop in one go) or an unbounded
share of the GIL with a thread (mypyc-compiled code never offers the GIL, and the
collector's and the swap's passes ran while the loop waited for it).

The generator's return value is the work's result; an exception raised inside it comes
out of :meth:`Slicer.run_slice` (and :func:`run_sliced`) unchanged. The clock is a
parameter, so slicing is testable without a loop or real time. :func:`drive` runs the
same generators to the end at once, for callers that have no loop to keep answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

T = TypeVar("T")

#: Work that yields where it may pause and returns a ``T``.
Steps = Generator[None, None, T]

#: How long one slice of work may keep the event loop, seconds: a request arriving during
#: a slice waits up to about this long (a proxy's steady p99 is ~0.4-1 ms).
DEFAULT_SLICE_S = 0.00025
#: A turn of the loop shorter than this found nothing to do (an idle turn is ~5-10 us:
#: the task's own step and a poll for I/O), seconds.
IDLE_TURN_S = 0.00003
#: Steps :func:`drive` takes between two offers of the GIL (a few ms of work).
DRIVE_GIL_EVERY = 32


class Slicer(Generic[T]):
    """Steps a generator one time slice at a time."""

    __slots__ = ("_clock", "_result", "_steps", "done", "longest_s", "slice_s", "slices")

    def __init__(
        self,
        steps: Steps[T],
        slice_s: float = DEFAULT_SLICE_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._steps = steps
        self._clock = clock
        self.slice_s = slice_s
        #: Slices run so far.
        self.slices = 0
        #: The longest slice so far, seconds: ``slice_s`` plus the longest step's overrun,
        #: i.e. the longest the loop was kept from answering.
        self.longest_s = 0.0
        self.done = False
        self._result: T | None = None

    @property
    def result(self) -> T:
        """The work's return value (once :meth:`run_slice` returned ``True``)."""
        if not self.done:
            raise RuntimeError("the sliced work has not finished")
        return cast(T, self._result)

    def run_slice(self) -> bool:
        """Step the work until ``slice_s`` has passed or it ends; ``True`` once it ended.
        At least one step is taken per slice, however long it takes.

        Raises:
            Whatever the work raises (the work is then over); RuntimeError once done.
        """
        if self.done:
            raise RuntimeError("the sliced work is already done")
        self.slices += 1
        clock = self._clock
        start = clock()
        deadline = start + self.slice_s
        now = start
        try:
            while True:
                next(self._steps)
                now = clock()
                if now >= deadline:
                    return False
        except StopIteration as stop:
            self.done = True
            self._result = stop.value
            now = clock()
            return True
        except BaseException:
            self.done = True
            now = clock()
            raise
        finally:
            self.longest_s = max(self.longest_s, now - start)

    def close(self) -> None:
        """Abandon the work (its ``finally`` blocks run now)."""
        self.done = True
        self._steps.close()


@dataclass(frozen=True, slots=True)
class Sliced(Generic[T]):
    """What :func:`run_sliced` returns: the work's result, how many slices it took and the
    longest of them (seconds)."""

    result: T
    slices: int
    longest_s: float


async def run_sliced(
    steps: Steps[T],
    slice_s: float = DEFAULT_SLICE_S,
    clock: Callable[[], float] = time.perf_counter,
    *,
    idle_turn_s: float = IDLE_TURN_S,
    max_pause_s: float | None = None,
) -> Sliced[T]:
    """Run ``steps`` on the running loop, ``slice_s`` at a time, letting the loop run
    between slices until a turn finds it idle or ``max_pause_s`` (default ``slice_s``:
    the work keeps at least half the time) has passed. Cancelling the caller abandons
    the work (closes the generator)."""
    slicer = Slicer(steps, slice_s, clock)
    pause_s = slice_s if max_pause_s is None else max_pause_s
    try:
        while not slicer.run_slice():
            paused = clock()
            while True:
                turn = clock()
                await asyncio.sleep(0)
                now = clock()
                if now - turn < idle_turn_s or now - paused >= pause_s:
                    break
    finally:
        if not slicer.done:
            slicer.close()
    return Sliced(slicer.result, slicer.slices, slicer.longest_s)


def drive(steps: Steps[T]) -> T:
    """Run ``steps`` to the end at once (the same work, where no loop waits on it).

    Every :data:`DRIVE_GIL_EVERY` steps it offers the GIL: work driven in a thread (the
    console's dry-run check builds a whole state) then lets the event loop in between,
    which mypyc-compiled steps would not do by themselves.
    """
    countdown = DRIVE_GIL_EVERY
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return cast(T, stop.value)
        countdown -= 1
        if not countdown:
            countdown = DRIVE_GIL_EVERY
            time.sleep(0)


def release(items: list[object], every: int = 64) -> Steps[None]:
    """Drop ``items`` from the end of the list, ``every`` at a time between pauses.

    Freeing a large structure in one go (the last reference to 10,000 compiled routes)
    runs every deallocation in one stretch; handed here in an order in which they may go,
    its parts are freed a few at a time. Put the parts first in ``items`` and their
    containers after them, so each container goes while its parts are still held here.
    """
    while items:
        del items[-every:]
        if items:
            yield
