"""The dispatch loop: due handles → never-early check → write-ahead commit → runner.

Only schedules due within ``horizon_ms`` are held in the wheel, as ``("s", id)`` handles; the
rest stay in SQLite behind the ``next_due_ms`` index. A refill handle wakes the loop every half
horizon to load the next window ``(loaded_until, now + horizon]``, page by page, so memory
follows what is due soon and never the number of stored schedules or their payloads.

Each pass takes at most ``BATCH`` expired handles from the timer and commits their schedules in
one store transaction: the planner (pure, :mod:`schedd.planner`) turns each due schedule into
firings and a new high-water mark, and the store commits them together (write-ahead). Only then
are tickets handed to the runner, whose ready queues keep what they have no room for in the
store. Batching bounds the tickets alive at once in a pulse of any size (the issue's 500 000
due in one second), lets the runs' own commits interleave, for a few extra fsyncs, and the rest
of a pulse waits in the timer, behind whatever falls due meanwhile. No pass costs the pulse's
size: taking the whole pulse at once held the loop 340-360 ms at its due instant.

**Urgent lanes**: a schedule whose lane has reserved slots is latency-sensitive by the
operator's own statement, so it is armed ``first``: when it falls due the timer hands it out
alone, and it is committed in a transaction of its own ahead of the rest of the pass: during a
pulse it waits for the one transaction in progress, not for a thousand bulk schedules planned
beside it (measured: a critical every-second schedule 60-140 ms late during a 110 000 pulse
without this, see docs/benchmarks.md).
A commit that fails (disk full, I/O error) loses nothing: the handles are re-armed and retried a
second later, and no task started.

Whoever moves a schedule's ``next_due_ms`` into the loaded window must arm it: the dispatcher
does so after each commit, and admin/reload changes call :meth:`Dispatcher.schedule_moved`.

**Retries** take the same road: a ``failed`` firing's next attempt is a ``("r", firing_id)``
handle, loaded by the same refill from the store's retry index (so a retry scheduled before a
restart fires after it) and armed directly by :meth:`Dispatcher.retry_scheduled` when the
runner records a failure. At expiry the store moves due retries back to ``committed``,
re-checking the wall clock in the transaction (never early), and the tickets go to the runner.

**Pre-scaling**: the dispatcher knows which loaded handles run Python tasks and when they are
due, so after each refill and each pass it tells the runner how many are due within
``PRESCALE_MS``; the pool grows towards that ahead of a known pulse instead of during it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar

from schedd import failpoints
from schedd.clock import Clock, ClockReading, reading
from schedd.events import FiringEvents
from schedd.model import PythonTask
from schedd.planner import plan
from schedd.store.contract import Store
from schedd.store.records import SchedulePlan, ScheduleRecord, ScheduleRule, Ticket
from schedd.timer import Timer

log = logging.getLogger("schedd.dispatcher")

REFILL = ("refill",)
#: Rows per loader page: each page is its own short read, and an admin read waits for at most
#: one; arming a page of 5 000 held the loop for 15-20 ms while a 500 000 pulse loaded.
PAGE = 1000
#: Due schedules per write-ahead transaction.
BATCH = 500
#: After a failed commit, due handles are retried this much later.
RETRY_MS = 1000
#: How far ahead Python firings count towards pre-scaling the worker pool.
PRESCALE_MS = 5_000


class TicketSink(Protocol):
    """Where committed firings go (the runner); it also answers the overlap question."""

    def submit(self, tickets: Sequence[Ticket], as_of: ClockReading | None = None) -> None: ...

    def active_count(self, schedule_id: int) -> int:
        """Firings of the schedule committed or running in this process (overlap asks)."""

    def prescale(self, due_soon: int) -> None:
        """``due_soon`` Python firings are due within ``PRESCALE_MS``."""


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
        urgent_lanes: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._timer = timer
        self._runner = runner
        self._events = events
        self._clock = clock
        self._horizon = horizon_ms
        self._loaded_until: int | None = None
        #: Wall due time of each armed Python schedule (for pre-scaling).
        self._python_due: dict[int, int] = {}
        self._urgent_lanes = urgent_lanes
        #: Armed schedules of the urgent lanes (armed ``first``: committed ahead of the rest).
        self._urgent: set[int] = set()
        self._due_soon = 0
        self.last_fired_wall_ms: int | None = None
        self.committed = 0
        self.passes = 0
        #: Why the last commit failed, until one succeeds again (health reads it).
        self.failing: str | None = None
        #: Told the size of each write-ahead batch (metrics); set by the daemon.
        self.on_committed: Callable[[int], None] = lambda firings: None

    async def run(self) -> None:
        await self.refill()
        while True:
            keys = await self._timer.expired(BATCH)
            while keys:  # the rest of a pulse: no waiting, but one pass per BATCH handles
                await self._pass(keys)
                keys = self._timer.expired_now(BATCH)

    async def _pass(self, keys: list[Hashable]) -> None:
        """Handle up to ``BATCH`` expired handles in the timer's order: the urgent lanes'
        alone if any fell due, else the newly due ones in front of what is left of a pulse,
        so a schedule due during a long pulse waits for one batch, not for the whole pulse."""
        if REFILL in keys:
            await self.refill()
        if ids := _ids(keys, "s"):
            await self._dispatch(ids)
        if retries := _ids(keys, "r"):
            await self._start_retries(retries)
        self._prescale()
        self.passes += 1

    async def refill(self) -> None:
        """Arm every schedule due in ``(loaded_until, now + horizon]``."""
        now = self._clock.wall_ms()
        until = now + self._horizon
        start = None if self._loaded_until is None else (self._loaded_until, 2**62)
        async for due, sid, is_python, lane in _pages(self._store.due_schedules, start, until):
            self._arm_schedule(sid, due, is_python=is_python, urgent=lane in self._urgent_lanes)
        async for due, fid in _pages(self._store.due_retries, start, until):
            self._timer.arm(("r", fid), due)
        self._loaded_until = max(until, self._loaded_until or until)
        self._timer.arm(REFILL, now + self._horizon // 2)

    def retry_scheduled(self, firing_id: int, retry_at_ms: int) -> None:
        """A firing failed and its next attempt is due at ``retry_at_ms`` (wall)."""
        if self._loaded_until is not None and retry_at_ms <= self._loaded_until:
            self._timer.arm(("r", firing_id), retry_at_ms)

    def schedule_moved(self, rec: ScheduleRecord) -> None:
        """A schedule was added, changed, paused or resumed outside the dispatcher (admin,
        reload).

        A handle left behind is harmless (the transaction re-reads the row and re-arms at its
        real due time), but a missing or late one would fire late, so every change calls this.
        """
        self.schedule_removed(rec.id)
        due = None if rec.paused else rec.next_due_ms
        if due is not None and self._loaded_until is not None and due <= self._loaded_until:
            self._arm_schedule(
                rec.id,
                due,
                is_python=isinstance(rec.spec.task, PythonTask),
                urgent=rec.spec.lane in self._urgent_lanes,
            )

    def schedule_removed(self, schedule_id: int) -> None:
        """The schedule has nothing to fire any more (removed, or about to be re-armed)."""
        self._timer.cancel(("s", schedule_id))
        self._forget(schedule_id)

    def _arm_schedule(
        self, schedule_id: int, due_ms: int, *, is_python: bool, urgent: bool
    ) -> None:
        self._timer.arm(("s", schedule_id), due_ms, first=urgent)
        if is_python:
            self._python_due[schedule_id] = due_ms
        if urgent:
            self._urgent.add(schedule_id)

    def _forget(self, schedule_id: int) -> None:
        self._python_due.pop(schedule_id, None)
        self._urgent.discard(schedule_id)

    def _prescale(self) -> None:
        """Tell the runner when the number of Python firings due soon changed."""
        until = self._clock.wall_ms() + PRESCALE_MS
        due_soon = sum(1 for due in self._python_due.values() if due <= until)
        if due_soon != self._due_soon:
            self._due_soon = due_soon
            self._runner.prescale(due_soon)

    async def _dispatch(self, ids: list[int]) -> None:
        as_of = reading(self._clock)
        now = as_of[0]
        rearm: dict[int, int] = {}
        names: set[str] = set()

        def planner(rule: ScheduleRule) -> SchedulePlan | None:
            result = plan(rule, now_ms=now, active=self._runner.active_count(rule.id))
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
            self._try_again("s", ids, now, exc)
            return
        await failpoints.hit("after_commit_before_dispatch")
        self.failing = None
        for sid in ids:
            if sid not in rearm:
                self._forget(sid)
        for sid, due in rearm.items():
            if self._loaded_until is not None and due <= self._loaded_until:
                self._arm_schedule(
                    sid, due, is_python=sid in self._python_due, urgent=sid in self._urgent
                )
            else:
                self._forget(sid)
        self._runner.submit(tickets, as_of)
        for ticket in tickets:
            self._events.changed(ticket.key, ticket.schedule)  # `runs wait KEY --state committed`
        for name in names:
            self._events.changed(None, name)
        if tickets:
            self.committed += len(tickets)
            self.last_fired_wall_ms = now
            self.on_committed(len(tickets))

    async def _start_retries(self, firing_ids: list[int]) -> None:
        as_of = reading(self._clock)
        now = as_of[0]
        try:
            batch = await self._store.start_retries(firing_ids, now)
        except Exception as exc:  # noqa: BLE001 - the loop must survive a failed commit
            self._try_again("r", firing_ids, now, exc)
            return
        self.failing = None
        for due, fid in batch.not_due:  # the wall clock is behind: never early
            self._timer.arm(("r", fid), due)
        self._runner.submit(batch.tickets, as_of)
        for ticket in batch.tickets:
            self._events.changed(ticket.key, ticket.schedule)

    def _try_again(self, kind: str, ids: list[int], now: int, exc: Exception) -> None:
        """A commit failed (disk full, I/O error): nothing started; re-arm the handles."""
        log.error("committing %d %r handle(s) failed, retrying: %s", len(ids), kind, exc)
        self.failing = str(exc) or type(exc).__name__
        for i in ids:
            self._timer.arm((kind, i), now + RETRY_MS, first=kind == "s" and i in self._urgent)


#: A loader row: ``(due_ms, id, ...)``.
_Row = TypeVar("_Row", bound=tuple[Any, ...])


async def _pages(
    fetch: Callable[..., Awaitable[list[_Row]]], after: tuple[int, int] | None, until: int
) -> AsyncIterator[_Row]:
    """Every row of a ``(due, id, ...)`` index read due by ``until``, page by short page."""
    while True:
        page = await fetch(after=after, until_ms=until, limit=PAGE)
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = (int(page[-1][0]), int(page[-1][1]))


def _ids(keys: list[Hashable], kind: str) -> list[int]:
    return [int(k[1]) for k in keys if isinstance(k, tuple) and k[0] == kind]
