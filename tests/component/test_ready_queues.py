"""The bounded ready queues and the catch-up drain, through the real runner, dispatcher and
SQLite store, on a fake clock.

The attempts are a stand-in that moves each firing through the store as a real run would
(``running``, then its outcome) and records when it started; whether it ends at once or waits
for the test, and how, is the test's choice. Everything the runner decides (what it holds, what
it leaves in the store and reads back, in which order, at which rate) is production code.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from schedd import dispatcher as dispatcher_module
from schedd.catchup import CatchupSettings
from schedd.clock import SystemClock
from schedd.dispatcher import Dispatcher
from schedd.events import FiringEvents
from schedd.keys import firing_key
from schedd.lanes import Lane
from schedd.model import CommandTask, FiringState, OnceSpec, RunOutcome, ScheduleSpec
from schedd.payload import RunPayload
from schedd.planner import initial_marks
from schedd.runner import Runner
from schedd.store.records import NewFiring, Ticket
from schedd.store.sqlite import SqliteStore
from schedd.timer import Timer
from tests.fakes import FakeClock, Gates

T0 = 1_767_225_600_000
TASK = CommandTask(("/bin/true",))
#: A bound on every wait for the runner's tasks: a deadline, never a sleep.
WAIT_S = 20


class Started(NamedTuple):
    """What a start recorded: no Ticket kept, so counting live Tickets measures the runner."""

    firing_id: int
    key: str
    lane: str
    catchup: bool
    wall_ms: int


@dataclass
class StoreAttempts:
    """Runs that go through the store's states; they end at once unless ``gated``."""

    clock: FakeClock
    store: SqliteStore
    gated: bool = False
    outcome: RunOutcome = RunOutcome.SUCCEEDED
    #: Called at each start (the memory checks hook in here).
    on_start: Callable[[], None] = lambda: None
    starts: list[Started] = field(default_factory=list)
    ended: int = 0
    gates: Gates = field(default_factory=Gates)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, ticket: Ticket, payload: RunPayload, stop: object) -> RunOutcome:
        now = self.clock.wall_ms()
        self.starts.append(Started(ticket.firing_id, ticket.key, ticket.lane, ticket.catchup, now))
        self.on_start()
        await self.store.set_firing_state(
            ticket.firing_id, FiringState.RUNNING, reason=None, now_ms=now
        )
        await self._notify()
        if self.gated:
            await self.gates.wait(ticket.firing_id)
        final = (
            FiringState.SUCCEEDED if self.outcome is RunOutcome.SUCCEEDED else FiringState.FAILED
        )
        await self.store.set_firing_state(
            ticket.firing_id, final, reason=None, now_ms=self.clock.wall_ms()
        )
        self.ended += 1
        await self._notify()
        return self.outcome

    async def settle(self) -> None:
        """Each run above stored its end before returning."""

    def release_all(self) -> None:
        self.gated = False
        self.gates.open_all()

    async def until(self, check: Callable[[], bool], what: str) -> None:
        """Wait, woken by each start and end, until ``check`` holds."""
        async with asyncio.timeout(WAIT_S):
            async with self._changed:
                await self._changed.wait_for(check)
        assert check(), what

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def keys(self) -> list[str]:
        return [t.key for t in self.starts]

    @property
    def started(self) -> int:
        return len(self.starts)

    @property
    def finished(self) -> int:
        return self.ended


@dataclass
class Rig:
    clock: FakeClock
    store: SqliteStore
    attempts: StoreAttempts
    runner: Runner

    async def commit(self, n: int, *, lane: str = "default", catchup: bool = False) -> list[int]:
        """``n`` committed ad-hoc firings (no schedule: no overlap), one transaction; their ids."""
        payload_id = (await self.store.get_schedule("job")).payload_id
        kind = "c" if catchup else "f"
        made = await self.store.insert_firings(
            [
                NewFiring(
                    f"{lane}-{kind}-{self.clock.wall_ms()}-{i:05d}",
                    None,
                    "@submit",
                    T0,
                    T0,
                    FiringState.COMMITTED,
                    payload_id,
                    lane,
                    catchup=catchup,
                )
                for i in range(n)
            ]
        )
        return [rec.id for rec, _ in made]

    async def submit(self, ids: list[int]) -> None:
        """Hand ``ids`` over in one call, as the dispatcher hands over a commit's firings."""
        self.runner.submit([(await self.store.get_firing_by_id(i)).ticket() for i in ids])


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[MakeRig]:
    rigs: list[Rig] = []

    async def make(
        *,
        max_ready: int,
        capacity: int = 2,
        lanes: Mapping[str, Lane] | None = None,
        catchup: CatchupSettings | None = None,
        gated: bool = False,
        store: SqliteStore | None = None,
        start: bool = True,
    ) -> Rig:
        clock = FakeClock(wall_ms=T0)
        if store is None:
            store = SqliteStore(tmp_path / f"s{len(rigs)}.db")
            await store.open()
            job = ScheduleSpec("job", OnceSpec(T0 + 86_400_000), TASK)
            await store.reconcile([job], initial=lambda s, hw: initial_marks(s, hw, T0), now_ms=T0)
        attempts = StoreAttempts(clock, store, gated=gated)
        runner = Runner(
            store,
            clock,
            FiringEvents(SystemClock()),
            attempts,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]  # the pool is only asked to prescale
            max_workers=capacity,
            lanes=lanes,
            max_ready=max_ready,
            catchup=catchup,
        )
        if start:
            runner.start()
        rig = Rig(clock, store, attempts, runner)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.attempts.release_all()
        await rig.runner.stop(0)
    for store in {id(r.store): r.store for r in rigs}.values():
        await store.close()


def live_tickets() -> int:
    return sum(isinstance(o, Ticket) for o in gc.get_objects())


# --- the memory bound ----------------------------------------------------------------------------


async def test_a_pulse_far_larger_than_max_ready_never_holds_more_than_max_ready(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 000 one-shots due at one instant, committed by the real dispatcher, run through a
    runner that may hold 100: it holds at most 100, runs each once, in order, never early."""
    n, max_ready, batch = 3000, 100, 250
    monkeypatch.setattr(dispatcher_module, "BATCH", batch)
    rig = await make_rig(max_ready=max_ready)
    due = T0 + 10_000
    specs = [ScheduleSpec(f"p{i:05d}", OnceSpec(due), TASK) for i in range(n)]
    await rig.store.reconcile(specs, initial=lambda s, hw: initial_marks(s, hw, T0), now_ms=T0)
    tickets_seen: list[int] = []
    baseline = live_tickets()

    def check_memory() -> None:
        assert rig.runner.ready.held <= max_ready
        if rig.attempts.started % 500 == 1:
            tickets_seen.append(live_tickets() - baseline)

    rig.attempts.on_start = check_memory
    dispatcher = Dispatcher(
        rig.store,
        Timer(rig.clock),
        rig.runner,
        FiringEvents(SystemClock()),
        rig.clock,
        horizon_ms=60_000,
    )
    loop = asyncio.create_task(dispatcher.run())
    try:
        rig.clock.unsettle()
        await rig.clock.settled()
        rig.clock.advance(10_000)
        await rig.attempts.until(lambda: rig.attempts.finished == n, "every firing ran")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    assert rig.runner.ready.peak <= max_ready, "the ready queues never held more than max_ready"
    assert rig.runner.ready.peak >= max_ready // 2, "the bound was reached: the test bites"
    assert tickets_seen, "the memory was sampled"
    assert max(tickets_seen) <= max_ready + batch + 2, f"live tickets in the pulse: {tickets_seen}"
    keys = rig.attempts.keys()
    assert len(keys) == len(set(keys)) == n, "each firing ran exactly once"
    assert keys == sorted(keys), "in the order they were committed (names sort as ids do)"
    assert all(started >= due for *_, started in rig.attempts.starts), "never early"
    assert await rig.store.count_firings([FiringState.COMMITTED]) == 0


async def test_a_restart_reads_every_committed_firing_back_in_order_holding_few(
    make_rig: MakeRig,
) -> None:
    seed = await make_rig(max_ready=10, start=False)
    ids = await seed.commit(700, lane="bulk") + await seed.commit(300)
    rig = await make_rig(max_ready=50, store=seed.store, lanes={"bulk": Lane()}, start=False)
    spans = await rig.store.ready_spans()
    assert sorted((s.lane, s.count) for s in spans) == [("bulk", 700), ("default", 300)]
    rig.runner.resume(spans, await rig.store.committed_by_schedule())
    rig.runner.start()
    await rig.attempts.until(lambda: rig.attempts.finished == 1000, "all resumed firings ran")
    assert rig.runner.ready.peak <= 50
    started = [t.firing_id for t in rig.attempts.starts]
    assert sorted(started) == sorted(ids), "each exactly once"
    for lane in ("bulk", "default"):
        of_lane = [t.firing_id for t in rig.attempts.starts if t.lane == lane]
        assert of_lane == sorted(of_lane), f"{lane} in id order"


async def test_firings_committed_while_others_wait_in_the_store_queue_behind_them(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(max_ready=4, capacity=1, gated=True)
    first = await rig.commit(10)
    await rig.submit(first)
    await rig.attempts.until(lambda: rig.attempts.started == 1, "the first starts")
    assert rig.runner.ready.held == 3, "four held (one of them started), six left in the store"
    rig.clock.advance(1)  # new keys
    later = await rig.commit(3)
    await rig.submit(later)
    assert rig.runner.ready.held == 3, "room or not, a later firing waits behind the stored ones"
    rig.attempts.release_all()
    await rig.attempts.until(lambda: rig.attempts.finished == 13, "all ran")
    assert [t.firing_id for t in rig.attempts.starts] == first + later


async def test_a_firing_handed_over_again_is_held_and_run_once(make_rig: MakeRig) -> None:
    """A page may read a committed firing back before its own hand-over arrives; the second
    sight of it, in the same batch or a later one, must not queue it twice."""
    rig = await make_rig(max_ready=10, capacity=1, gated=True)
    ids = await rig.commit(3)
    await rig.submit([*ids, ids[0]])
    await rig.attempts.until(lambda: rig.attempts.started == 1, "the first starts")
    await rig.submit(ids[1:])
    assert rig.runner.ready.held == 2, "three held once each, one of them started"
    rig.attempts.release_all()
    await rig.attempts.until(lambda: rig.attempts.finished == 3, "all ran")
    assert [t.firing_id for t in rig.attempts.starts] == ids


async def test_removed_firings_left_in_the_store_are_uncounted_and_never_start(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(max_ready=10, capacity=1, gated=True)
    job = await rig.store.get_schedule("job")
    await rig.store.reconcile(
        [job.spec, ScheduleSpec("many", OnceSpec(T0), TASK)],
        initial=lambda s, hw: initial_marks(s, hw, T0),
        now_ms=T0,
    )
    sched = await rig.store.get_schedule("many")
    made = await rig.store.insert_firings(
        [
            NewFiring(
                firing_key("many", T0 + i),
                sched.id,
                "many",
                T0 + i,
                T0 + i,
                FiringState.COMMITTED,
                sched.payload_id,
                "default",
            )
            for i in range(100)
        ]
    )
    for rec, _ in made:
        rig.runner.submit([rec.ticket()])
    await rig.attempts.until(lambda: rig.attempts.started == 1, "the first starts")
    assert rig.runner.active_count(sched.id) == 100

    removal = await rig.store.remove_firings(
        schedule="many",
        match=None,
        states=[FiringState.COMMITTED],
        limit=1000,
        dry_run=False,
        now_ms=T0,
    )
    assert len(removal.removed) == 99, "all but the running one"
    rig.runner.discard(removal.removed)
    assert rig.runner.active_count(sched.id) == 1 + 10, "the held ones count until dropped"
    sentinel = await rig.commit(1)
    await rig.submit(sentinel)
    rig.attempts.release_all()
    await rig.attempts.until(lambda: rig.attempts.finished == 2, "the one after them ran")
    assert rig.attempts.keys()[1:] == [(await rig.store.get_firing_by_id(sentinel[0])).key], (
        "no removed firing started, held or left in the store"
    )
    assert rig.runner.active_count(sched.id) == 0, "every removed firing was un-counted"


# --- the catch-up drain --------------------------------------------------------------------------


async def test_backlog_is_released_at_the_rate_and_fresh_work_goes_first(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(max_ready=1000, capacity=1, gated=True, catchup=CatchupSettings(rate=5))
    backlog = await rig.commit(40, catchup=True)
    await rig.submit(backlog)
    await rig.attempts.until(lambda: rig.attempts.started == 1, "the backlog starts")
    assert rig.runner.ready.draining
    assert rig.runner.ready.held == 1, "one released to wait for the slot, not the whole burst"

    rig.clock.advance(1)  # new keys; the token bucket gains nothing worth a firing
    fresh = await rig.commit(3)
    await rig.submit(fresh)
    rig.attempts.gated = False
    rig.attempts.release_all()
    await rig.attempts.until(lambda: rig.attempts.finished == 5, "burst and fresh ran")
    kinds = ["c" if t.catchup else "f" for t in rig.attempts.starts]
    assert kinds == ["c", "f", "f", "f", "c"], "fresh work overtook the released backlog"

    # The burst of 5 is spent: from now on one catch-up firing per 200 ms of fake time.
    for step in range(1, 6):
        rig.clock.advance(199)
        await rig.attempts.until(lambda s=step: rig.attempts.finished == 4 + s, "none early")
        assert rig.attempts.started == 4 + step
        rig.clock.advance(1)
        await rig.attempts.until(
            lambda s=step: rig.attempts.finished == 5 + s, "one more after 200 ms"
        )
    assert Counter(t.catchup for t in rig.attempts.starts) == {True: 7, False: 3}


async def test_failing_runs_halve_the_rate_and_a_drained_backlog_resets_it(
    make_rig: MakeRig,
) -> None:
    settings = CatchupSettings(rate=8, window=4, max_failure_ratio=0.5, step=2)
    rig = await make_rig(max_ready=1000, capacity=2, catchup=settings)
    rig.attempts.outcome = RunOutcome.FAILED
    await rig.submit(await rig.commit(20, catchup=True))
    await rig.attempts.until(lambda: rig.attempts.finished == 8, "the burst ran, and failed")
    assert rig.runner.ready.drain.rate == 2, "two failing windows: 8 -> 4 -> 2"

    rig.attempts.outcome = RunOutcome.SUCCEEDED
    for finished in (10, 12):  # 2/s, and the bank holds one second's worth
        rig.clock.advance(1_000)
        await rig.attempts.until(lambda f=finished: rig.attempts.finished == f, "two more")
    assert rig.runner.ready.drain.rate == 4, "a clean window adds the step"
    while rig.attempts.finished < 20:
        rig.clock.advance(1_000)
        await rig.attempts.until(
            lambda f=rig.attempts.finished: rig.attempts.finished > f or f == 20, "progress"
        )
    rig.clock.advance(1)
    await rig.attempts.until(lambda: not rig.runner.ready.draining, "drained")
    assert rig.runner.ready.drain.rate == 8, "the next backlog starts from the configured rate"
