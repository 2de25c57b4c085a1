"""A run's rows are committed beside it (schedd/attempt.py): the task runs before its start is
stored, the slot is free before its end is, and shutdown waits for both.

The store's ``start_run`` or ``finish_run`` is held at a gate, so "not committed yet" is a state
the test controls rather than a race it hopes to catch. An end known before its start is
written is stored with it, in one row.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from schedd.keys import firing_key
from schedd.model import CommandTask, FiringState, OnceSpec, ScheduleSpec
from schedd.store.records import ProcessRef, RunFinish, Ticket, not_ended
from tests.component.runtime import Runtime, start_runtime
from tests.fakes import FakeClock

T0 = 1_767_225_600_000
Ended = Callable[[], RunFinish | None]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_ms=T0)


async def stop_waits_for_held_rows(rt: Runtime, gate: asyncio.Event, due: int, what: str) -> None:
    """The runner's stop does not return while rows are held at ``gate``; once released, the
    firings of ``a`` and ``b`` due at ``due`` are stored as succeeded."""
    stopping = asyncio.create_task(rt.runner.stop(5_000))
    # Without the wait for uncommitted rows, stop() returns within a few turns of the loop
    # (nothing is in flight): give it many, without any clock.
    for _ in range(50):
        await asyncio.sleep(0)
    assert not stopping.done(), f"stop waits for {what}"
    gate.set()
    await stopping
    for name in ("a", "b"):
        f = await rt.store.get_firing(firing_key(name, due))
        assert f.state is FiringState.SUCCEEDED, f


async def test_the_next_firing_starts_while_the_last_ones_end_is_still_uncommitted(
    tmp_path: Path, clock: FakeClock
) -> None:
    # Each task waits for a line the test writes once the task's start is stored, so its end is
    # written apart from its start (an end known before then rides with the start: the test
    # below).
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    task = CommandTask(("sh", "-c", f'read line < "{fifo}"'))
    specs = [ScheduleSpec(name, OnceSpec(T0), task) for name in ("a", "b")]
    rt = await start_runtime(tmp_path / "s.db", clock, specs, max_workers=1)
    store = rt.store
    held: list[int] = []
    both_held, gate = asyncio.Event(), asyncio.Event()
    finish_run = store.finish_run

    async def gated(run_id: int, finish: RunFinish) -> None:
        held.append(run_id)
        if len(held) == 2:
            both_held.set()
        await gate.wait()
        await finish_run(run_id, finish)

    store.finish_run = gated  # type: ignore[method-assign]
    try:
        await rt.advance(0)
        # One slot: the second firing can only start once the first one's slot is free, and
        # the first one's end is held uncommitted.
        for name in ("a", "b"):
            await rt.until(firing_key(name, T0), FiringState.RUNNING)
            await asyncio.to_thread(fifo.write_text, "go\n")
        async with asyncio.timeout(10):
            await both_held.wait()
        assert rt.runner.finished == 0, "nothing counts as finished before its end is stored"
        await stop_waits_for_held_rows(rt, gate, T0, "the ends still being stored")
        assert rt.runner.finished == 2
    finally:
        gate.set()
        store.finish_run = finish_run  # type: ignore[method-assign]
        await rt.close()


async def test_tasks_run_and_free_their_slot_while_their_starts_are_still_uncommitted(
    tmp_path: Path, clock: FakeClock
) -> None:
    due = T0 + 1000  # after the gate is in place
    specs = [ScheduleSpec(name, OnceSpec(due), CommandTask(("true",))) for name in ("a", "b")]
    rt = await start_runtime(tmp_path / "s.db", clock, specs, max_workers=1)
    store = rt.store
    held: list[str] = []
    both_spawned, gate = asyncio.Event(), asyncio.Event()
    start_run, finish_run = store.start_run, store.finish_run
    ends_apart: list[int] = []

    async def gated(
        ticket: Ticket, process: ProcessRef | None, now_ms: int, ended: Ended = not_ended
    ) -> int:
        held.append(ticket.key)
        if len(held) == 2:
            both_spawned.set()
        await gate.wait()
        return await start_run(ticket, process, now_ms, ended)

    async def counted(run_id: int, finish: RunFinish) -> None:
        ends_apart.append(run_id)
        await finish_run(run_id, finish)

    store.start_run = gated  # type: ignore[method-assign]
    store.finish_run = counted  # type: ignore[method-assign]
    try:
        await rt.advance(1000)
        # One slot: the second task is spawned only once the first one has ended, and the
        # first one's start is still held.
        async with asyncio.timeout(10):
            await both_spawned.wait()
            await asyncio.wait(set(rt.runner._in_flight))  # both tasks ended, slots free
        for name in ("a", "b"):
            f = await store.get_firing(firing_key(name, due))
            assert f.state is FiringState.COMMITTED, "nothing of the run is stored yet"
        assert (rt.runner.started, rt.runner.finished) == (0, 0)
        await stop_waits_for_held_rows(rt, gate, due, "the starts (and ends) still being stored")
        for name in ("a", "b"):
            (run,) = await store.list_runs(schedule=name, limit=5)
            assert (run.state, run.exit_code) == ("succeeded", 0), run
        assert (rt.runner.started, rt.runner.finished) == (2, 2)
        assert ends_apart == [], "each end was known before its start was written: one row"
    finally:
        gate.set()
        store.start_run = start_run  # type: ignore[method-assign]
        store.finish_run = finish_run  # type: ignore[method-assign]
        await rt.close()


async def test_a_start_that_fails_after_its_task_ended_stores_no_end_and_is_logged_once(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    due = T0 + 1000
    spec = ScheduleSpec("a", OnceSpec(due), CommandTask(("true",)))
    rt = await start_runtime(tmp_path / "s.db", clock, [spec], max_workers=1)
    store = rt.store
    spawned, fail = asyncio.Event(), asyncio.Event()
    start_run = store.start_run

    async def failing(
        ticket: Ticket, process: ProcessRef | None, now_ms: int, ended: Ended = not_ended
    ) -> int:
        spawned.set()
        await fail.wait()
        raise OSError("disk I/O error")

    store.start_run = failing  # type: ignore[method-assign]
    try:
        await rt.advance(1000)
        async with asyncio.timeout(10):
            await spawned.wait()
            await asyncio.wait(set(rt.runner._in_flight))  # the task ends, its slot is freed
        fail.set()
        await rt.runner.stop(5_000)  # waits for the start (and the end that stores nothing)
        f = await store.get_firing(firing_key("a", due))
        assert f.state is FiringState.COMMITTED, "no start stored: re-run at the next start"
        assert rt.runner.finished == 0
        errors = [r for r in caplog.records if "storing a run failed" in r.getMessage()]
        assert len(errors) == 1, errors
    finally:
        store.start_run = start_run  # type: ignore[method-assign]
        await rt.close()
