"""What the daemon tells the outside about itself: run events into metrics and overdue checks,
and one scrape-time reading of its state for every way metrics leave the process.

Events (a run started or finished, a batch committed) arrive on the hot paths and only touch
in-memory counters. Gauges (queue depth per lane, DLQ, store size, …) are read when someone
asks — ``schedctl metrics``, the HTTP endpoint, the textfile writer all call :meth:`render`,
so the three always agree and nothing is read from the store between scrapes.
"""

from __future__ import annotations

from collections.abc import Sequence

from schedd.clock import Clock
from schedd.lanes import every_lane
from schedd.metrics import Gauges, LaneGauge, Metrics
from schedd.model import FiringState, RunOutcome
from schedd.overdue import OverdueWatch
from schedd.runner import Runner
from schedd.store.contract import Store
from schedd.store.records import ScheduleRecord, Ticket
from schedd.store.rows import DLQ_STATES
from schedd.timer import Timer


class Telemetry:
    def __init__(
        self,
        metrics: Metrics,
        overdue: OverdueWatch,
        *,
        store: Store,
        runner: Runner,
        timer: Timer,
        clock: Clock,
    ) -> None:
        self.metrics = metrics
        self.overdue = overdue
        self.store = store
        self.runner = runner
        self._timer = timer
        self._clock = clock

    # --- events (RunObserver and the dispatcher's commit hook): in memory only --------------

    def run_started(self, ticket: Ticket, lateness_ms: int | None) -> None:
        if lateness_ms is not None:
            self.metrics.run_started(ticket.schedule, lateness_ms)

    def run_finished(
        self, ticket: Ticket, outcome: RunOutcome, state: FiringState, duration_ms: int
    ) -> None:
        now = self._clock.wall_ms()
        self.metrics.run_finished(ticket.schedule, outcome.value, duration_ms, now)
        if outcome is RunOutcome.CRASH:
            self.metrics.crashed(ticket.schedule)
        if state is FiringState.FAILED:
            self.metrics.retried(ticket.schedule)
        elif state is FiringState.QUARANTINED:
            self.metrics.quarantined(ticket.schedule)
        if outcome is RunOutcome.SUCCEEDED:
            self.overdue.succeeded(ticket.schedule, now)

    def committed(self, firings: int) -> None:
        self.metrics.committed(firings)

    # --- overdue: which schedules must succeed how often -----------------------------------

    async def watch(self, schedules: Sequence[ScheduleRecord]) -> None:
        """Schedules were added or changed (API, reload): follow their ``expect_success_within``,
        counting from their last success (a window added to an old schedule that succeeded an
        hour ago must not alarm at once)."""
        watched = [r for r in schedules if r.spec.policies.expect_success_within_ms is not None]
        for rec in schedules:
            if rec.spec.policies.expect_success_within_ms is None:
                self.overdue.forget(rec.spec.name)
        successes = await self.store.last_successes() if watched else {}
        for rec in watched:
            policies = rec.spec.policies
            assert policies.expect_success_within_ms is not None
            self.overdue.track(
                rec.spec.name,
                policies.expect_success_within_ms,
                policies.on_overdue,
                last_success_ms=successes.get(rec.spec.name),
                added_ms=rec.created_ms,
            )

    def unwatch(self, schedule: str) -> None:
        self.overdue.forget(schedule)

    async def watch_overdue(self) -> None:
        """Load every expectation and its last success, then watch forever. Run after READY:
        it reads the whole schedules table once, which must not delay start-up."""
        successes = await self.store.last_successes()
        for e in await self.store.expectations():
            self.overdue.track(
                e.schedule,
                e.window_ms,
                e.on_overdue,
                last_success_ms=successes.get(e.schedule),
                added_ms=e.created_ms,
            )
        await self.overdue.run()

    # --- scrapes ------------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The exposition text, with gauges read now (a few short reads, no payloads)."""
        store, now = self.store, self._clock.wall_ms()
        info = await store.info()
        oldest_dead = await store.oldest_dead_ms()
        depths = await store.lanes()  # one walk of the unfinished firings serves both gauges
        lanes = [
            LaneGauge(d.lane, d.ready, d.running, None if lag is None else lag / 1000)
            for d in every_lane(depths)
            for lag in [d.lag_ms(now)]
        ]
        pool, ready = self.runner.pool.stats(), self.runner.ready
        self.metrics.set_gauges(
            Gauges(
                lanes=lanes,
                workers_alive=pool.size,
                workers_busy=self.runner.busy,
                workers_max=self.runner.capacity,
                dlq_size=await store.count_firings(DLQ_STATES),
                dlq_oldest_age_s=None if oldest_dead is None else max(0, now - oldest_dead) / 1000,
                catchup_backlog=sum(d.catchup for d in depths),
                catchup_rate=ready.drain.rate if ready.draining else 0.0,
                ready_held=ready.held,
                clock_jumps=self._timer.jumps.count,
                store_bytes=info.size_bytes,
                wal_bytes=info.wal_bytes,
                schedules=await store.count_schedules(),
                wheel_handles=len(self._timer),
                overdue=self.overdue.overdue(),
            )
        )
        return self.metrics.render()
