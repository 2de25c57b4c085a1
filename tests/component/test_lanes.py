"""Lanes and the misfire re-check, through the real runner and SQLite store, on a fake clock.

The attempts are a stand-in that holds each run until the test releases it, so which firing
holds which slot, and in what order they start, is under the test's control; everything the
runner decides (lane queues, reservations, weights, the misfire re-check, the store writes) is
production code.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from schedd.clock import SystemClock, reading
from schedd.events import FiringEvents
from schedd.keys import firing_key
from schedd.lanes import Lane
from schedd.model import (
    CommandTask,
    FiringState,
    IntervalSpec,
    Misfire,
    Policies,
    ScheduleSpec,
)
from schedd.payload import RunPayload, encode_payload
from schedd.planner import initial_marks
from schedd.runner import Runner
from schedd.store.records import FiringRecord, NewFiring, Ticket
from schedd.store.sqlite import SqliteStore
from tests.fakes import FakeClock, Gates

T0 = 1_767_225_600_000
GRACE = 1_000
TASK = CommandTask(("/bin/true",))


@dataclass
class HeldAttempts:
    """Attempts that start (are recorded) at once and end only when the test says so."""

    starts: list[Ticket] = field(default_factory=list)
    ended: int = 0
    #: Set at each start and end, and by the runner's own firing events (a skip): what
    #: :meth:`Bench.eventually` wakes on.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    gates: Gates = field(default_factory=Gates)

    async def run(self, ticket: Ticket, payload: RunPayload, stop: object) -> None:
        self.starts.append(ticket)
        self.changed.set()
        await self.gates.wait(ticket.firing_id)
        self.ended += 1
        self.changed.set()

    def release(self, ticket: Ticket) -> None:
        self.gates.open(ticket.firing_id)

    async def settle(self) -> None:
        """Nothing is stored behind a run here."""

    def running(self) -> list[Ticket]:
        return [t for t in self.starts if not self.gates.is_open(t.firing_id)]

    @property
    def started(self) -> int:
        return len(self.starts)

    @property
    def finished(self) -> int:
        return self.ended


@dataclass
class Bench:
    clock: FakeClock
    store: SqliteStore
    attempts: HeldAttempts
    runner: Runner

    async def adhoc(self, key: str, lane: str) -> Ticket:
        rec, _ = await self.store.submit(
            NewFiring(key, None, "@submit", T0, T0, FiringState.COMMITTED, 0, lane, None, T0),
            encode_payload(TASK, Policies()),
        )
        return rec.ticket()

    async def occurrence(self, name: str, at_ms: int, *, created_ms: int | None = None) -> Ticket:
        """A committed firing of schedule ``name``, as dispatch (or ``backfill``) makes it."""
        sched = await self.store.get_schedule(name)
        [(rec, _)] = await self.store.insert_firings(
            [
                NewFiring(
                    firing_key(name, at_ms),
                    sched.id,
                    name,
                    at_ms,
                    at_ms,
                    FiringState.COMMITTED,
                    sched.payload_id,
                    sched.spec.lane,
                    created_ms=created_ms,
                )
            ]
        )
        return rec.ticket()

    async def firing(self, ticket: Ticket) -> FiringRecord:
        return await self.store.get_firing(ticket.key)

    async def eventually(self, check: Callable[[], bool], what: str) -> None:
        """Wait until ``check`` holds, woken by every attempt start and end and every firing
        the runner records itself; the runner finishes a slot without awaiting after those, so
        its counts are current when this wakes. A deadline bounds the wait."""
        try:
            async with asyncio.timeout(10):
                while True:
                    self.attempts.changed.clear()
                    if check():
                        return
                    await self.attempts.changed.wait()
        except TimeoutError:
            raise AssertionError(f"never: {what}") from None


class BenchEvents(FiringEvents):
    """The runner's firing events, also waking :meth:`Bench.eventually`."""

    def __init__(self, changed: asyncio.Event) -> None:
        super().__init__(SystemClock())
        self._changed = changed

    def changed(self, key: str | None, schedule: str) -> None:
        super().changed(key, schedule)
        self._changed.set()


def schedule(name: str, misfire: Misfire) -> ScheduleSpec:
    policies = Policies(misfire=misfire, misfire_grace_ms=GRACE)
    return ScheduleSpec(name, IntervalSpec(60_000), TASK, policies=policies)


MakeBench = Callable[..., Awaitable[Bench]]
#: Schedules every bench has, by name: one per misfire policy.
POLICY_OF = {"skip": Misfire.SKIP, "fire-once": Misfire.FIRE_ONCE, "fire-all": Misfire.FIRE_ALL}


@pytest.fixture
async def make_bench(tmp_path: Path) -> AsyncIterator[MakeBench]:
    benches: list[Bench] = []

    async def make(
        lanes: Mapping[str, Lane] | None = None, capacity: int = 4, max_ready: int = 10_000
    ) -> Bench:
        clock = FakeClock(wall_ms=T0)
        store = SqliteStore(tmp_path / f"s{len(benches)}.db")
        await store.open()
        specs = [schedule(name, misfire) for name, misfire in POLICY_OF.items()]
        await store.reconcile(specs, initial=lambda s, hw: initial_marks(s, hw, T0), now_ms=T0)
        attempts = HeldAttempts()
        # The runner touches the worker pool only to prescale it, which no test here does.
        runner = Runner(
            store,
            clock,
            BenchEvents(attempts.changed),
            attempts,
            None,
            max_workers=capacity,
            lanes=lanes,
            max_ready=max_ready,
        )
        runner.start()
        bench = Bench(clock, store, attempts, runner)
        benches.append(bench)
        return bench

    yield make
    for bench in benches:
        for ticket in bench.attempts.starts:
            bench.attempts.release(ticket)
        await bench.runner.stop(0)
        await bench.store.close()


# --- lanes --------------------------------------------------------------------------------------


async def test_a_reserved_slot_runs_critical_work_at_once_behind_a_bulk_backlog(
    make_bench: MakeBench,
) -> None:
    b = await make_bench({"critical": Lane(reserved=1), "bulk": Lane()}, capacity=4)
    for i in range(50):
        b.runner.submit([await b.adhoc(f"bulk-{i}", "bulk")])
    assert (b.runner.busy, b.runner.queued) == (3, 47), "bulk never takes critical's slot"
    await b.eventually(lambda: b.attempts.started == 3, "three bulk firings start")

    for round_ in range(3):
        critical = await b.adhoc(f"critical-{round_}", "critical")
        b.runner.submit([critical])
        assert b.runner.busy == 4, "critical starts at once, with 47 bulk firings ahead of it"
        await b.eventually(lambda t=critical: t in b.attempts.starts, "critical starts")
        b.attempts.release(critical)
        await b.eventually(lambda: b.runner.busy == 3, "critical's run ends")
        assert b.runner.queued == 47, "its slot went back to idle, not to bulk"

    for _ in range(10):  # bulk drains through its three slots, never more
        b.attempts.release(b.attempts.running()[0])
        await b.eventually(lambda: len(b.attempts.running()) == 3, "the next bulk firing starts")
        assert b.runner.busy == 3
    assert Counter(t.lane for t in b.attempts.starts) == Counter(bulk=13, critical=3)


async def test_saturated_lanes_share_the_slots_three_to_one_by_weight(
    make_bench: MakeBench,
) -> None:
    b = await make_bench({"heavy": Lane(weight=3), "light": Lane(weight=1)}, capacity=4)
    for i in range(60):
        b.runner.submit([await b.adhoc(f"light-{i}", "light")])
        b.runner.submit([await b.adhoc(f"heavy-{i}", "heavy")])
    await b.eventually(lambda: b.attempts.started == 4, "the slots fill")
    while b.attempts.started < 40:
        started = b.attempts.started
        b.attempts.release(b.attempts.running()[0])
        await b.eventually(lambda n=started: b.attempts.started == n + 1, "a slot is refilled")
        assert b.runner.busy == 4
    first = Counter(t.lane for t in b.attempts.starts[:40])
    assert 28 <= first["heavy"] <= 32, first


async def test_an_unconfigured_lane_runs_in_default(
    make_bench: MakeBench,
) -> None:
    b = await make_bench({"critical": Lane(reserved=1)}, capacity=2)
    b.runner.submit([await b.adhoc("a", "gone")])
    b.runner.submit([await b.adhoc("b", "default")])
    assert (b.runner.busy, b.runner.queued) == (1, 1), "one shared slot for default and 'gone'"


# --- the misfire re-check at start --------------------------------------------------------------


async def a_blocker(b: Bench) -> Ticket:
    """A run holding the only slot, started; the test releases it to free the slot."""
    blocker = await b.adhoc("blocker", "default")
    b.runner.submit([blocker])
    await b.eventually(lambda: b.attempts.started == 1, "the blocker starts")
    return blocker


async def queued_behind_a_blocker(b: Bench, ticket: Ticket, wait_ms: int) -> None:
    """``ticket`` waits ``wait_ms`` in the queue behind a run holding the only slot, then starts."""
    blocker = await a_blocker(b)
    b.runner.submit([ticket])
    b.clock.advance(wait_ms)
    b.attempts.release(blocker)


@pytest.mark.parametrize(
    ("wait_ms", "skipped"), [(GRACE + 1, True), (GRACE, False)], ids=["past-grace", "at-grace"]
)
async def test_skip_records_a_firing_that_waited_past_its_grace_and_never_runs_it(
    make_bench: MakeBench, wait_ms: int, skipped: bool
) -> None:
    b = await make_bench(capacity=1)
    late = await b.occurrence("skip", T0)
    await queued_behind_a_blocker(b, late, wait_ms)
    if skipped:
        await b.eventually(lambda: b.runner.busy == 0, "the late firing is handled")
        f = await b.firing(late)
        assert f.state is FiringState.SKIPPED
        assert f.reason == f"misfire: waited {wait_ms}ms in the queue (grace {GRACE}ms)"
        assert late not in b.attempts.starts
        assert b.runner.active_count(late.schedule_id or 0) == 0, "it no longer counts as active"
    else:
        await b.eventually(lambda: late in b.attempts.starts, "the on-time firing starts")


@pytest.mark.parametrize(
    ("step_ms", "handed_after"),
    [(3_600_000, False), (-3_600_000, False), (3_600_000, True)],
    ids=["forward", "back", "between-its-commit-and-its-queueing"],
)
async def test_a_wall_step_does_not_change_how_long_a_firing_waited(
    make_bench: MakeBench, step_ms: int, handed_after: bool
) -> None:
    b = await make_bench(capacity=1)
    on_time = await b.occurrence("skip", T0)
    blocker = await a_blocker(b)
    decided = reading(b.clock)
    if not handed_after:
        b.runner.submit([on_time])  # queued on time, it waits across the step
    b.clock.jump_wall(step_ms)
    if handed_after:
        b.runner.submit([on_time], decided)  # decided before the step, handed over after it
    b.clock.advance(GRACE)
    b.attempts.release(blocker)
    await b.eventually(
        lambda: on_time in b.attempts.starts, "it waited its grace, no more: it runs"
    )


async def test_a_wall_step_while_a_firing_waits_in_the_store_is_no_wait(
    make_bench: MakeBench,
) -> None:
    b = await make_bench(capacity=1, max_ready=1)
    blocker = await a_blocker(b)
    held = await b.occurrence("fire-once", T0)
    b.runner.submit([held])  # the lane's one place in memory
    stored = await b.occurrence("skip", T0)
    b.runner.submit([stored])  # no room: left in the store, read back when there is
    assert held.firing_id in b.runner.ready.known
    assert stored.firing_id not in b.runner.ready.known
    b.clock.jump_wall(3_600_000)
    b.attempts.release(blocker)
    await b.eventually(lambda: held in b.attempts.starts, "the held firing starts")
    b.attempts.release(held)
    await b.eventually(
        lambda: stored in b.attempts.starts, "read back after the step, it has not waited: it runs"
    )


@pytest.mark.parametrize("name", ["fire-once", "fire-all"])
async def test_other_policies_run_a_firing_that_waited_past_its_grace(
    make_bench: MakeBench, name: str
) -> None:
    b = await make_bench(capacity=1)
    late = await b.occurrence(name, T0)
    await queued_behind_a_blocker(b, late, 10 * GRACE)
    await b.eventually(lambda: late in b.attempts.starts, "the late firing starts")
    assert (await b.firing(late)).state is FiringState.COMMITTED, "not skipped (held by the stub)"


@pytest.mark.parametrize(
    ("kind", "wait_ms"), [("adhoc", 10 * GRACE), ("retry", 10 * GRACE), ("backfill", GRACE // 2)]
)
async def test_only_first_attempts_of_schedules_count_their_wait_from_when_they_were_ready(
    make_bench: MakeBench, kind: str, wait_ms: int
) -> None:
    b = await make_bench(capacity=1)
    if kind == "adhoc":
        ticket = await b.adhoc("submitted", "default")
    elif kind == "retry":
        ticket = dataclasses.replace(await b.occurrence("skip", T0), attempt=2)
    else:  # an occurrence an hour old, backfilled now: it is not late for its old instant
        ticket = await b.occurrence("skip", T0 - 3_600_000, created_ms=T0)
    await queued_behind_a_blocker(b, ticket, wait_ms)
    await b.eventually(lambda: ticket in b.attempts.starts, f"the {kind} firing starts")
