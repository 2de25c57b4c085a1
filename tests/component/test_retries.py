"""Retries, budgets and overlap through the real dispatcher, runner and store, on a fake clock.

Task processes are real (``false``, ``sleep``); only time is faked, so the schedule of attempts
is asserted to the millisecond: with the random draw pinned at its top (``rand = 1.0``) full
jitter waits exactly ``min(max, base·2^(n-1))`` after attempt n.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schedd.keys import firing_key
from schedd.model import (
    CommandTask,
    FiringState,
    IntervalSpec,
    OnceSpec,
    Overlap,
    Policies,
    PythonTask,
    Retry,
    ScheduleSpec,
    TaskSpec,
)
from schedd.policies import BUDGET_EXHAUSTED
from schedd.ratelimit import Rate
from tests.component.runtime import Runtime, start_runtime
from tests.fakes import FakeClock

T0 = 1_767_225_600_000
RETRY = Retry(max_attempts=4, base_ms=1_000, max_ms=3_000)


def once(name: str, task: TaskSpec | tuple[str, ...], *, tenant: str | None = None) -> ScheduleSpec:
    return ScheduleSpec(
        name,
        OnceSpec(T0),
        CommandTask(task) if isinstance(task, tuple) else task,
        policies=Policies(retry=RETRY),
        tenant=tenant,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_ms=T0)


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        (CommandTask(("false",)), "exit status 1"),
        (PythonTask("tests.pytasks:boom", ("no luck",)), "exception: ValueError: no luck"),
    ],
    ids=["command", "python-raises"],
)
async def test_a_failing_task_is_retried_with_growing_delays_and_ends_dead(
    tmp_path: Path, clock: FakeClock, task: TaskSpec, reason: str
) -> None:
    rt = await start_runtime(tmp_path / "s.db", clock, [once("flaky", task)])
    key = firing_key("flaky", T0)
    try:
        f = await rt.until(key, FiringState.FAILED, attempt=1)
        assert f.retry_at_ms == T0 + 1_000
        for attempt, delay in [(2, 1_000), (3, 2_000), (4, 3_000)]:
            await rt.advance(delay - 1)
            assert (await rt.store.get_firing(key)).attempt == attempt - 1, "never early"
            await rt.advance(1)
            f = await rt.until(key, FiringState.FAILED, FiringState.DEAD, attempt=attempt)
            if attempt < 4:
                assert f.retry_at_ms == clock.wall_ms() + min(3_000, 1_000 << (attempt - 1))
        assert f.state is FiringState.DEAD
        assert f.reason == f"gave up after 4 attempt(s) (failed); last: {reason}"
        runs = await rt.store.runs_of(f.id)
        assert [(r.attempt, r.state, r.reason) for r in runs] == [
            (n, "failed", reason) for n in range(1, 5)
        ]
        assert [r.started_ms - T0 for r in runs] == [0, 1_000, 3_000, 6_000]
    finally:
        await rt.close()


async def test_a_scheduled_retry_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    spec = once("flaky", ("false",))
    rt = await start_runtime(tmp_path / "s.db", clock, [spec])
    key = firing_key("flaky", T0)
    await rt.until(key, FiringState.FAILED, attempt=1)
    await rt.close()
    rt = await start_runtime(tmp_path / "s.db", clock, [spec])
    try:
        await rt.advance(999)
        assert (await rt.store.get_firing(key)).attempt == 1
        await rt.advance(1)
        await rt.until(key, FiringState.FAILED, attempt=2)
    finally:
        await rt.close()


async def test_a_tenants_budget_stops_retries_once_spent(tmp_path: Path, clock: FakeClock) -> None:
    specs = [once(f"batch-{i}", ("false",), tenant="acme") for i in range(3)]
    specs.append(once("other", ("false",), tenant="globex"))
    rt = await start_runtime(tmp_path / "s.db", clock, specs, budgets={"acme": Rate(1, 600_000)})
    try:
        states = [
            await rt.until(firing_key(s.name, T0), FiringState.FAILED, FiringState.DEAD)
            for s in specs
        ]
        acme = sorted((f.state, f.reason) for f in states[:3])
        assert acme == [
            (FiringState.DEAD, BUDGET_EXHAUSTED),
            (FiringState.DEAD, BUDGET_EXHAUSTED),
            (FiringState.FAILED, "exit status 1"),
        ]
        assert states[3].state is FiringState.FAILED, "another tenant's budget is untouched"
    finally:
        await rt.close()


def every(name: str, overlap: Overlap, argv: tuple[str, ...]) -> ScheduleSpec:
    return ScheduleSpec(
        name,
        IntervalSpec(1_000),
        CommandTask(argv),
        policies=Policies(overlap=overlap),
        jitter_ms=0,
    )


async def states_of(rt: Runtime, name: str) -> list[tuple[int, FiringState, str | None]]:
    rows = await rt.store._read(
        "SELECT scheduled_for_ms, state, reason FROM firings WHERE schedule = ? ORDER BY id",
        (name,),
    )
    return [(r[0] - T0, FiringState(r[1]), r[2]) for r in rows]


async def overlap_runtime(path: Path, clock: FakeClock, overlap: Overlap) -> Runtime:
    """One schedule every second whose runs outlast it (the first occurrence at T0 + 1 s)."""
    clock.jump_wall(1)
    name = overlap.value.replace("_", "-")
    return await start_runtime(path, clock, [every(name, overlap, ("sleep", "100"))])


async def test_queue_one_holds_one_firing_behind_the_running_one_and_skips_more(
    tmp_path: Path, clock: FakeClock
) -> None:
    rt = await overlap_runtime(tmp_path / "s.db", clock, Overlap.QUEUE_ONE)
    try:
        await check_queue_one(rt)
    finally:
        await rt.close()


async def check_queue_one(rt: Runtime) -> None:
    for _ in range(3):
        await rt.advance(1_000)
    await rt.until(firing_key("queue-one", T0 + 1_000), FiringState.RUNNING)
    assert await states_of(rt, "queue-one") == [
        (1_000, FiringState.RUNNING, None),
        (2_000, FiringState.COMMITTED, None),
        (3_000, FiringState.SKIPPED, "overlap: a run is going and another is already queued"),
    ]
    assert rt.runner.active_count((await rt.store.get_schedule("queue-one")).id) == 2


async def test_replace_stops_the_running_firing_and_starts_the_new_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    rt = await overlap_runtime(tmp_path / "s.db", clock, Overlap.REPLACE)
    try:
        await check_replace(rt)
    finally:
        await rt.close()


async def check_replace(rt: Runtime) -> None:
    await rt.advance(1_000)
    first = firing_key("replace", T0 + 1_000)
    await rt.until(first, FiringState.RUNNING)
    await rt.advance(1_000)
    second = firing_key("replace", T0 + 2_000)
    f = await rt.until(first, FiringState.CANCELLED)
    assert f.reason == f"replaced by {second}"
    await rt.until(second, FiringState.RUNNING)
    [run] = await rt.store.runs_of(f.id)
    assert (run.state, run.signal) == ("cancelled", 15)
