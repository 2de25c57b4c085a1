"""The dispatch path with a fake clock and a real SQLite store: timing, never early, high-water.

The runner is replaced by a recorder (the dispatcher's only contact with it is ``submit`` and
``active_count``); everything else is the production code. The test advances the fake clock, then
waits until the dispatcher is asleep again (``clock.settled()``) before asserting what did or did
not fire — no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from schedd import dispatcher as dispatcher_module
from schedd.clock import ClockReading, SystemClock
from schedd.dispatcher import Dispatcher
from schedd.events import FiringEvents
from schedd.keys import firing_key
from schedd.model import CommandTask, IntervalSpec, OnceSpec, PythonTask, ScheduleSpec
from schedd.planner import initial_marks
from schedd.store.records import Ticket
from schedd.store.sqlite import SqliteStore
from schedd.timer import JUMP_CHECK_MS, Timer
from tests.fakes import FakeClock

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EVERY = 10_000


@dataclass
class Recorder:
    clock: FakeClock
    fired: list[tuple[Ticket, int]] = field(default_factory=list)  # (ticket, wall at submit)
    #: The clocks each firing was decided at, as handed over with it.
    decided: list[ClockReading | None] = field(default_factory=list)
    prescaled: list[int] = field(default_factory=list)

    def submit(self, tickets: Iterable[Ticket], as_of: ClockReading | None = None) -> None:
        for ticket in tickets:
            self.fired.append((ticket, self.clock.wall_ms()))
            self.decided.append(as_of)

    def active_count(self, schedule_id: int) -> int:
        return 0

    def prescale(self, due_soon: int) -> None:
        self.prescaled.append(due_soon)

    def fired_keys(self) -> list[str]:
        return [t.key for t, _ in self.fired]


@dataclass
class Harness:
    clock: FakeClock
    store: SqliteStore
    runner: Recorder
    dispatcher: Dispatcher
    events: FiringEvents
    task: asyncio.Task[None]

    async def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        await self.clock.settled()

    def early(self) -> list[str]:
        return [t.key for t, wall in self.runner.fired if wall < t.scheduled_for_ms]


async def start(
    clock: FakeClock, path: Path, *specs: ScheduleSpec, urgent_lanes: frozenset[str] = frozenset()
) -> Harness:
    store = SqliteStore(path)
    await store.open()
    now = clock.wall_ms()
    await store.reconcile(list(specs), initial=lambda s, hw: initial_marks(s, hw, now), now_ms=now)
    runner = Recorder(clock)
    # Waiters sleep on the real clock, so they are no sleepers on the fake one (``settled``).
    events = FiringEvents(SystemClock())
    dispatcher = Dispatcher(
        store, Timer(clock), runner, events, clock, horizon_ms=60_000, urgent_lanes=urgent_lanes
    )
    clock.unsettle()
    task = asyncio.create_task(dispatcher.run())
    await clock.settled()
    return Harness(clock, store, runner, dispatcher, events, task)


async def stop(h: Harness) -> None:
    h.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.task
    await h.store.close()


def every(name: str = "tick", ms: int = EVERY) -> ScheduleSpec:
    return ScheduleSpec(name, IntervalSpec(ms), CommandTask(("true",)), jitter_ms=0)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await start(FakeClock(wall_ms=T0 + 1), tmp_path / "s.db", every())
    yield harness
    await stop(harness)


async def test_fires_at_the_due_millisecond_and_not_before(h: Harness) -> None:
    await h.advance(EVERY - 2)  # wall = T0 + EVERY - 1
    assert h.runner.fired_keys() == []
    await h.advance(1)
    assert h.runner.fired_keys() == [firing_key("tick", T0 + EVERY)]
    assert h.early() == []


async def test_a_firing_is_handed_over_with_the_clocks_it_was_decided_at(h: Harness) -> None:
    # The wall clock steps while the firing's transaction commits: the runner must measure
    # its wait from the decision, not from a reading taken after the step.
    dispatch = h.store.dispatch

    async def stepping(*args: Any, **kwargs: Any) -> Any:
        h.store.dispatch = dispatch  # type: ignore[method-assign]
        tickets = await dispatch(*args, **kwargs)
        h.clock.jump_wall(3_600_000)
        return tickets

    h.store.dispatch = stepping  # type: ignore[method-assign]
    await h.advance(EVERY - 1)
    monotonic = h.clock.monotonic_ms()
    # (the missed hour then fires as one catch-up firing, decided after the step)
    assert h.runner.fired_keys()[0] == firing_key("tick", T0 + EVERY)
    assert h.runner.decided[0] == (T0 + EVERY, monotonic)


async def test_never_early_when_the_wall_clock_falls_slightly_behind(h: Harness) -> None:
    # A step below the jump threshold: the timer is not re-mapped, so its monotonic estimate
    # expires 800 ms before the wall clock reaches the due time. The dispatcher must re-arm.
    h.clock.jump_wall(-800)
    await h.advance(EVERY - 1)
    assert h.runner.fired_keys() == [], "the wall clock says it is not due yet"
    await h.advance(799)
    assert h.runner.fired_keys() == []
    await h.advance(1)
    assert h.runner.fired_keys() == [firing_key("tick", T0 + EVERY)]
    assert h.early() == []


async def test_never_early_after_a_large_backward_jump(h: Harness) -> None:
    h.clock.jump_wall(-30_000)
    await h.advance(EVERY + 29_998)
    assert h.runner.fired_keys() == []
    await h.advance(1)
    assert h.runner.fired_keys() == [firing_key("tick", T0 + EVERY)]
    assert h.dispatcher._timer.jumps.count == 1
    assert h.early() == []


async def test_a_backward_wall_jump_never_refires(h: Harness) -> None:
    await h.advance(EVERY)
    await h.advance(EVERY)
    assert h.runner.fired_keys() == [
        firing_key("tick", T0 + EVERY),
        firing_key("tick", T0 + 2 * EVERY),
    ]
    h.clock.jump_wall(-2 * EVERY)  # the wall clock shows T0 again
    for _ in range(3):
        await h.advance(EVERY)
    keys = h.runner.fired_keys()
    assert len(keys) == len(set(keys)), "no occurrence fired twice"
    assert keys[-1] == firing_key("tick", T0 + 3 * EVERY)
    assert h.early() == []


async def test_a_forward_jump_is_a_misfire_collapsed_into_one_firing(h: Harness) -> None:
    h.clock.jump_wall(3_600_000)
    await h.advance(JUMP_CHECK_MS)  # the timer notices a jump within its check interval
    keys = h.runner.fired_keys()
    # fire_once collapses the missed hour into one firing keyed by its latest missed occurrence;
    # the overlap policy (skip) then records the on-time ones behind it as skipped.
    assert keys == [firing_key("tick", T0 + 3_600_000 - 60_000)]
    await h.advance(EVERY)
    assert h.runner.fired_keys()[-1] == firing_key("tick", T0 + 3_600_000 + EVERY)


async def test_the_high_water_mark_holds_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=T0 + 1)
    h1 = await start(clock, tmp_path / "s.db", every())
    for _ in range(3):
        await h1.advance(EVERY)
    before = h1.runner.fired_keys()
    await stop(h1)
    clock.jump_wall(-3 * EVERY)  # restarted with the wall clock back at T0
    h2 = await start(clock, tmp_path / "s.db", every())
    for _ in range(4):
        await h2.advance(EVERY)
    after = h2.runner.fired_keys()
    await stop(h2)
    assert len(before) == 3
    assert not set(before) & set(after), "nothing at or before the high-water mark re-fired"
    assert after == [firing_key("tick", T0 + 4 * EVERY)]


async def test_a_one_shot_missed_while_down_fires_once_at_start(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=T0)
    once = ScheduleSpec("once", OnceSpec(T0 - 3_600_000), CommandTask(("true",)))
    h = await start(clock, tmp_path / "s.db", once)
    await h.advance(1)
    assert h.runner.fired_keys() == [firing_key("once", T0 - 3_600_000)]
    await stop(h)
    h2 = await start(clock, tmp_path / "s.db", once)
    await h2.advance(120_000)
    assert h2.runner.fired_keys() == []
    await stop(h2)


async def test_schedules_beyond_the_horizon_stay_in_the_store_until_their_window(
    tmp_path: Path,
) -> None:
    clock = FakeClock(wall_ms=T0 + 1)
    far = ScheduleSpec("far", OnceSpec(T0 + 3_600_000), CommandTask(("true",)))
    h = await start(clock, tmp_path / "s.db", every("near", 10_000), far)
    assert ("s", 2) not in h.dispatcher._timer, "an hour away is beyond the 60 s horizon"
    await h.advance(3_600_000 - 1)
    assert firing_key("far", T0 + 3_600_000) in h.runner.fired_keys()
    assert h.early() == []
    await stop(h)


async def test_the_pool_is_told_ahead_of_a_pulse_of_python_firings(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=T0 + 1)
    pulse = [
        ScheduleSpec(f"py-{i}", OnceSpec(T0 + 20_000), PythonTask("m:f"), jitter_ms=0)
        for i in range(3)
    ]
    h = await start(clock, tmp_path / "s.db", every("cmd", 1_000), *pulse)
    try:
        await h.advance(1_000)
        assert h.runner.prescaled == [], "20 s away is not soon; commands never count"
        await h.advance(14_000)  # now 5 s before the pulse
        assert h.runner.prescaled == [3]
        await h.advance(5_000)
        assert {k for k in h.runner.fired_keys() if k.startswith("py-")} == {
            firing_key(f"py-{i}", T0 + 20_000) for i in range(3)
        }
        await h.advance(1_000)
        assert h.runner.prescaled == [3, 0], "fired one-shots no longer count"
    finally:
        await stop(h)


async def test_a_schedule_due_during_a_long_pulse_waits_for_one_batch_not_the_pulse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "BATCH", 3)
    due = T0 + EVERY
    bulk = [ScheduleSpec(f"bulk-{i}", OnceSpec(due), CommandTask(("true",))) for i in range(9)]
    urgent = ScheduleSpec("urgent", OnceSpec(due + 50), CommandTask(("true",)))
    h = await start(FakeClock(wall_ms=T0), tmp_path / "s.db", *bulk, urgent)
    try:
        # Each committed firing costs 20 ms of (fake) time, as a slow commit would.
        submit = h.runner.submit

        def slow_submit(tickets: Sequence[Ticket], as_of: ClockReading | None = None) -> None:
            submit(tickets, as_of)
            h.clock.elapse(20 * len(tickets))

        monkeypatch.setattr(h.runner, "submit", slow_submit)
        await h.advance(EVERY)
        keys = [k.split("@")[0] for k in h.runner.fired_keys()]
        assert "urgent" in keys[3:6], f"committed in the batch after the first: {keys}"
        assert sorted(keys) == sorted([*(s.name for s in bulk), "urgent"])
        assert h.early() == []
    finally:
        await stop(h)


@pytest.mark.parametrize("offset_ms", [0, 50], ids=["due-with-the-pulse", "due-during-it"])
async def test_an_urgent_lanes_schedule_is_committed_alone_ahead_of_a_pulse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset_ms: int
) -> None:
    """A lane with reserved slots is latency-sensitive: its schedule does not wait for (nor
    share a transaction with) bulk schedules due with it, only for a transaction in progress."""
    monkeypatch.setattr(dispatcher_module, "BATCH", 3)
    due = T0 + EVERY
    bulk = [ScheduleSpec(f"bulk-{i}", OnceSpec(due), CommandTask(("true",))) for i in range(9)]
    critical = ScheduleSpec(
        "critical", OnceSpec(due + offset_ms), CommandTask(("true",)), lane="critical"
    )
    # The critical schedule is stored last: by id it would be the pulse's last.
    clock = FakeClock(wall_ms=T0)
    h = await start(clock, tmp_path / "s.db", *bulk, critical, urgent_lanes=frozenset({"critical"}))
    try:
        batches: list[int] = []
        h.dispatcher.on_committed = batches.append
        submit = h.runner.submit

        def slow_submit(tickets: Sequence[Ticket], as_of: ClockReading | None = None) -> None:
            submit(tickets, as_of)
            h.clock.elapse(20 * len(tickets))  # 20 ms per firing, as a slow commit would take

        monkeypatch.setattr(h.runner, "submit", slow_submit)
        await h.advance(EVERY)
        keys = [k.split("@")[0] for k in h.runner.fired_keys()]
        if offset_ms == 0:
            assert (keys[0], batches) == ("critical", [1, 3, 3, 3]), (keys, batches)
        else:  # due while the first batch commits: right after it
            assert (keys[3], batches) == ("critical", [3, 1, 3, 3]), (keys, batches)
        assert h.early() == []
    finally:
        await stop(h)


async def test_a_waiter_on_a_firings_key_is_woken_by_its_commit(h: Harness) -> None:
    key = firing_key("tick", T0 + EVERY)
    checks = 0

    async def asked_again() -> bool:
        nonlocal checks
        checks += 1
        return checks > 1  # only a wake-up asks a second time

    deadline = SystemClock().monotonic_ms() + 10_000
    waiter = asyncio.create_task(
        h.events.wait_until(key, None, asked_again, deadline_mono_ms=deadline)
    )
    await h.advance(EVERY - 1)
    assert not waiter.done(), "no commit of its key yet"
    await h.advance(1)
    assert await asyncio.wait_for(waiter, 5), "woken by the commit, not by its deadline"


async def test_a_pulse_is_taken_from_the_timer_one_batch_per_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of a pulse waits in the timer: no pass handles more than ``BATCH`` handles, so
    none holds the loop for the whole pulse."""
    monkeypatch.setattr(dispatcher_module, "BATCH", 3)
    due = T0 + EVERY
    bulk = [ScheduleSpec(f"bulk-{i}", OnceSpec(due), CommandTask(("true",))) for i in range(10)]
    h = await start(FakeClock(wall_ms=T0), tmp_path / "s.db", *bulk)
    try:
        timer = h.dispatcher._timer
        taken: list[int] = []
        expired_now = timer.expired_now

        def recording(limit: int) -> list[Hashable]:
            keys = expired_now(limit)
            taken.append(len(keys))
            return keys

        monkeypatch.setattr(timer, "expired_now", recording)
        batches: list[int] = []
        h.dispatcher.on_committed = batches.append
        await h.advance(EVERY)
        assert batches == [3, 3, 3, 1]
        assert max(taken) == 3, taken
        assert sorted(h.runner.fired_keys()) == sorted(firing_key(s.name, due) for s in bulk)
    finally:
        await stop(h)


async def test_an_urgent_schedule_whose_commit_failed_stays_ahead_of_a_pulse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed commit re-arms its handles a second later; an urgent lane's schedule keeps its
    place ahead of a pulse falling due at that very moment."""
    monkeypatch.setattr(dispatcher_module, "BATCH", 3)
    due = T0 + EVERY
    critical = ScheduleSpec("critical", OnceSpec(due), CommandTask(("true",)), lane="critical")
    bulk = [
        ScheduleSpec(
            f"bulk-{i}", OnceSpec(due + dispatcher_module.RETRY_MS), CommandTask(("true",))
        )
        for i in range(9)
    ]
    clock = FakeClock(wall_ms=T0)
    h = await start(clock, tmp_path / "s.db", critical, *bulk, urgent_lanes=frozenset({"critical"}))
    try:
        dispatch = h.store.dispatch
        failures = [OSError("disk I/O error")]

        async def fails_once(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return await dispatch(*args, **kwargs)

        monkeypatch.setattr(h.store, "dispatch", fails_once)
        batches: list[int] = []
        h.dispatcher.on_committed = batches.append
        await h.advance(EVERY)
        assert (h.runner.fired_keys(), h.dispatcher.failing) == ([], "disk I/O error")
        await h.advance(dispatcher_module.RETRY_MS)
        keys = [k.split("@")[0] for k in h.runner.fired_keys()]
        assert (keys[0], batches) == ("critical", [1, 3, 3, 3]), (keys, batches)
        assert h.dispatcher.failing is None
        assert h.early() == []
    finally:
        await stop(h)
