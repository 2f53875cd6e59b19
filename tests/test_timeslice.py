"""Time slices of long work on the event loop (gatehouse.timeslice).

The slicer is driven with a fake clock that the work itself advances, so every test is
deterministic: no sleeping, no real time.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Generator

import pytest

from gatehouse.timeslice import Slicer, drive, release, run_sliced


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def work(
    clock: FakeClock, costs: list[float], log: list[int], result: str = "done"
) -> Generator[None, None, str]:
    """Steps that take ``costs`` seconds of fake time each, recording which ran."""
    for i, cost in enumerate(costs):
        clock.now += cost
        log.append(i)
        yield
    return result


def test_a_slice_ends_at_the_first_pause_after_its_time_is_up() -> None:
    clock, log = FakeClock(), []
    slicer = Slicer(work(clock, [0.0003] * 10, log), slice_s=0.001, clock=clock)
    assert slicer.run_slice() is False
    # 0.3, 0.6, 0.9 ms are within the slice; the step reaching 1.2 ms ends it.
    assert log == [0, 1, 2, 3]
    assert slicer.run_slice() is False
    assert log == list(range(8))
    assert slicer.run_slice() is True
    assert log == list(range(10))
    assert slicer.result == "done"
    assert slicer.slices == 3


def test_a_step_longer_than_the_slice_still_runs_alone_and_is_reported() -> None:
    clock, log = FakeClock(), []
    slicer = Slicer(work(clock, [0.005, 0.0001, 0.0001], log), slice_s=0.001, clock=clock)
    assert slicer.run_slice() is False
    assert log == [0]
    assert slicer.longest_s == pytest.approx(0.005)
    assert slicer.run_slice() is True
    assert slicer.longest_s == pytest.approx(0.005)  # the short slice does not lower it


def test_work_that_never_pauses_finishes_in_one_slice() -> None:
    clock = FakeClock()
    slicer = Slicer(work(clock, [], []), slice_s=0.001, clock=clock)
    assert slicer.run_slice() is True
    assert slicer.result == "done"
    assert slicer.slices == 1


def test_the_result_is_not_there_before_the_work_ends() -> None:
    clock = FakeClock()
    slicer = Slicer(work(clock, [0.002, 0.002], []), slice_s=0.001, clock=clock)
    slicer.run_slice()
    with pytest.raises(RuntimeError):
        _ = slicer.result


def test_an_exception_in_the_work_comes_out_of_the_slice_and_ends_it() -> None:
    clock = FakeClock()

    def failing() -> Generator[None, None, None]:
        clock.now += 0.002
        yield
        raise ValueError("bad route")

    slicer = Slicer(failing(), slice_s=0.001, clock=clock)
    assert slicer.run_slice() is False
    with pytest.raises(ValueError, match="bad route"):
        slicer.run_slice()
    assert slicer.done
    with pytest.raises(RuntimeError):
        slicer.run_slice()


def test_closing_abandons_the_work_and_runs_its_cleanup() -> None:
    clock = FakeClock()
    cleaned: list[str] = []

    def steps() -> Generator[None, None, None]:
        try:
            while True:
                clock.now += 0.002
                yield
        finally:
            cleaned.append("finally")

    slicer = Slicer(steps(), slice_s=0.001, clock=clock)
    slicer.run_slice()
    slicer.close()
    assert cleaned == ["finally"]
    assert slicer.done


def test_the_loop_runs_other_tasks_between_slices() -> None:
    clock = FakeClock()
    order: list[str] = []

    def steps() -> Generator[None, None, int]:
        for i in range(3):
            order.append(f"slice {i}")
            clock.now += 0.002  # each step fills a slice
            yield
        return 42

    async def other(stop: asyncio.Event) -> None:
        while not stop.is_set():
            order.append("request")
            await asyncio.sleep(0)

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(other(stop))
        await asyncio.sleep(0)  # the other task is waiting on the loop
        done = await run_sliced(steps(), slice_s=0.001, clock=clock)
        stop.set()
        await task
        return done.result, done.slices

    result, slices = asyncio.run(scenario())
    assert (result, slices) == (42, 4)  # the fourth slice finds the work's end
    work_positions = [order.index(f"slice {i}") for i in range(3)]
    # Between any two slices the other task ran.
    for a, b in itertools.pairwise(work_positions):
        assert "request" in order[a + 1 : b]


def test_cancelling_the_caller_abandons_the_work() -> None:
    clock = FakeClock()
    cleaned: list[str] = []

    def steps() -> Generator[None, None, None]:
        try:
            while True:
                clock.now += 0.002
                yield
        finally:
            cleaned.append("finally")

    async def scenario() -> None:
        task = asyncio.create_task(run_sliced(steps(), slice_s=0.001, clock=clock))
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert cleaned == ["finally"]


def test_drive_runs_the_same_work_to_its_end_at_once() -> None:
    clock, log = FakeClock(), []
    assert drive(work(clock, [0.01] * 100, log, result="all")) == "all"
    assert log == list(range(100))


class Part:
    """An object whose freeing can be observed."""


def test_release_frees_from_the_end_a_few_at_a_time() -> None:
    items: list[object] = [Part() for _ in range(5)]
    refs = [weakref.ref(item) for item in items]
    steps = release(items, every=2)
    next(steps)
    assert [r() is not None for r in refs] == [True, True, True, False, False]
    next(steps)
    assert [r() is not None for r in refs] == [True, False, False, False, False]
    with pytest.raises(StopIteration):
        next(steps)
    assert all(r() is None for r in refs)
    assert items == []


def test_between_slices_the_loop_runs_until_a_turn_finds_it_idle() -> None:
    """A request needs several turns of the loop: while turns find work (take time), the
    pause goes on, so the request does not wait a slice per turn."""
    clock = FakeClock()
    order: list[str] = []
    pending = [3]  # turns of work the "request" has left

    def steps() -> Generator[None, None, None]:
        for i in range(2):
            order.append(f"slice {i}")
            clock.now += 0.002
            yield

    async def request() -> None:
        while pending[0]:
            pending[0] -= 1
            clock.now += 0.0001  # a busy turn: longer than an idle one
            order.append("turn")
            await asyncio.sleep(0)

    async def scenario() -> None:
        task = asyncio.create_task(request())
        await run_sliced(steps(), slice_s=0.001, clock=clock, idle_turn_s=0.00003)
        await task

    asyncio.run(scenario())
    # All three turns of the request ran in the first pause, before the second slice.
    assert order[: order.index("slice 1")] == ["slice 0", "turn", "turn", "turn"]


def test_a_pause_ends_after_its_longest_even_if_the_loop_stays_busy() -> None:
    clock = FakeClock()
    order: list[str] = []

    def steps() -> Generator[None, None, None]:
        for i in range(2):
            order.append(f"slice {i}")
            clock.now += 0.002
            yield

    async def busy(stop: asyncio.Event) -> None:
        while not stop.is_set():
            clock.now += 0.0004  # every turn busy
            order.append("turn")
            await asyncio.sleep(0)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(busy(stop))
        await asyncio.sleep(0)
        await run_sliced(steps(), slice_s=0.001, clock=clock, max_pause_s=0.001)
        stop.set()
        await task

    asyncio.run(scenario())
    between = order[order.index("slice 0") + 1 : order.index("slice 1")]
    # 0.4 ms a turn, at most 1 ms of pause: the third turn ends it.
    assert between == ["turn"] * 3
