"""The dispatch loop: due handles → never-early check → write-ahead commit → runner.

Only schedules due within ``horizon_ms`` are held in the wheel, as ``("s", id)`` handles; the
rest stay in SQLite behind the ``next_due_ms`` index. A refill handle wakes the loop every half
horizon to load the next window ``(loaded_until, now + horizon]``, page by page, so memory
follows what is due soon and never the number of stored schedules or their payloads.

Each wake-up pops every expired handle and handles them as **one** store transaction: the
planner (pure, :mod:`schedd.planner`) turns each due schedule into firings and a new high-water
mark, and the store commits them together (write-ahead). Only then are tickets handed to the
runner. A commit that fails (disk full, I/O error) loses nothing: the handles are re-armed and
retried a second later, and no task started.

Whoever moves a schedule's ``next_due_ms`` into the loaded window must arm it: the dispatcher
does so after each commit, and admin/reload changes call :meth:`Dispatcher.schedule_moved`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from schedd.clock import Clock
from schedd.events import FiringEvents
from schedd.planner import plan
from schedd.store.contract import Store
from schedd.store.records import SchedulePlan, ScheduleRule, Ticket
from schedd.timer import Timer

log = logging.getLogger("schedd.dispatcher")

REFILL = ("refill",)
#: Rows per loader page: each page is its own short read.
PAGE = 5000
#: After a failed commit, due handles are retried this much later.
RETRY_MS = 1000


class TicketSink(Protocol):
    """Where committed firings go (the runner); it also answers the overlap question."""

    def submit(self, ticket: Ticket) -> None: ...

    def is_active(self, schedule_id: int) -> bool: ...


class Dispatcher:
    def __init__(
        self,
        store: Store,
        timer: Timer,
        runner: TicketSink,
        events: FiringEvents,
        clock: Clock,
        *,
        horizon_ms: int,
    ) -> None:
        self._store = store
        self._timer = timer
        self._runner = runner
        self._events = events
        self._clock = clock
        self._horizon = horizon_ms
        self._loaded_until: int | None = None
        self.last_fired_wall_ms: int | None = None
        self.committed = 0
        self.passes = 0

    async def run(self) -> None:
        await self.refill()
        while True:
            keys = await self._timer.expired()
            ids = [int(k[1]) for k in keys if isinstance(k, tuple) and k[0] == "s"]
            if REFILL in keys:
                await self.refill()
            if ids:
                await self._dispatch(ids)
            self.passes += 1

    async def refill(self) -> None:
        """Arm every schedule due in ``(loaded_until, now + horizon]``."""
        now = self._clock.wall_ms()
        until = now + self._horizon
        after = None if self._loaded_until is None else (self._loaded_until, 2**62)
        while True:
            page = await self._store.due_schedules(after=after, until_ms=until, limit=PAGE)
            for due, sid in page:
                self._timer.arm(("s", sid), due)
            if len(page) < PAGE:
                break
            after = page[-1]
        self._loaded_until = max(until, self._loaded_until or until)
        self._timer.arm(REFILL, now + self._horizon // 2)

    def schedule_moved(self, schedule_id: int, next_due_ms: int | None) -> None:
        """A schedule's next due time changed outside the dispatcher (admin, reload)."""
        if next_due_ms is None:
            self._timer.cancel(("s", schedule_id))
        elif self._loaded_until is not None and next_due_ms <= self._loaded_until:
            self._timer.arm(("s", schedule_id), next_due_ms)

    async def _dispatch(self, ids: list[int]) -> None:
        now = self._clock.wall_ms()
        rearm: dict[int, int] = {}
        names: set[str] = set()

        def planner(rule: ScheduleRule) -> SchedulePlan | None:
            result = plan(rule, now_ms=now, active=self._runner.is_active(rule.id))
            if result is None:
                # Not due by the wall clock yet (it is behind the monotonic estimate): wait
                # for the difference. Never early.
                if not rule.paused and rule.next_due_ms is not None:
                    rearm[rule.id] = rule.next_due_ms
                return None
            names.add(rule.name)
            if result.next_due_ms is not None:
                rearm[rule.id] = result.next_due_ms
            return result

        try:
            tickets = await self._store.dispatch(ids, planner)
        except Exception as exc:  # noqa: BLE001 - the loop must survive a failed commit
            log.error("committing %d due schedule(s) failed, retrying: %s", len(ids), exc)
            for sid in ids:
                self._timer.arm(("s", sid), now + RETRY_MS)
            return
        for sid, due in rearm.items():
            if self._loaded_until is not None and due <= self._loaded_until:
                self._timer.arm(("s", sid), due)
        for ticket in tickets:
            self._runner.submit(ticket)
        for name in names:
            self._events.changed(None, name)
        if tickets:
            self.committed += len(tickets)
            self.last_fired_wall_ms = now
