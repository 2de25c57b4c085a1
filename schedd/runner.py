"""Runs committed firings with bounded concurrency, by lane, honouring each schedule's policies.

A ticket (ids only) arrives once its firing is committed and goes to the ready queues
(:mod:`schedd.ready`: bounded by ``[dispatch] max_ready``, the overflow and the catch-up
backlog left in the store and read back in order); a free slot takes the next one, reads the
payload and hands the attempt to :class:`~schedd.attempt.Attempts`. At most ``[workers] max``
attempts are in flight, commands and Python calls together.

**Active counts** (for the planner's overlap decision) cover every firing this process was
told of and has not finished, held in memory or left in the store: :meth:`submit` counts it,
:meth:`resume` counts what a restart found committed, and its end (or removal) un-counts it.

**Lanes** (:mod:`schedd.lanes`): which lane's queue a free slot serves is the allocator's call;
a lane's reserved slots never run another lane's work, and the rest are shared by weight. A
ticket naming a lane the config does not have (removed since it was committed) runs in
``default``. Within a lane, tickets start in the order they arrived.

**Misfire, again at the start.** The planner applies the misfire policy when a schedule
becomes due; a firing that was on time then may still wait in a queue (a busy lane, a backlog)
until it is later than its grace. Under ``misfire = "skip"`` such a first attempt is recorded
``skipped`` instead of started, so "skip" means "never run late" however the lateness arose.
``fire_once`` and ``fire_all`` run it: the planner already collapsed or capped the series.
Ad-hoc submissions have no misfire policy, and retries are late by design. The wait is measured
on the monotonic clock from when the ticket was taken in (plus how late it was then), so a
wall-clock step while it waits does not make it late (a forward step is the planner's business).

**Overlap** is decided twice. The planner counts a schedule's active firings
(:meth:`active_count`: committed or running here) to *skip* occurrences; the runner then keeps
the promise of ``queue_one`` and ``replace`` for the firings it was given: a ticket of such a
schedule whose previous run is still going is *parked* (it holds no slot) until that run ends,
and for ``replace`` the running attempt is first asked to stop (SIGTERM, grace, SIGKILL; its
firing ends ``cancelled``, "replaced by <key>"). ``allow`` runs side by side.

**Removal**: an operator may cancel committed firings (``firings remove``). The store's state
change is the truth, but the runner must not even spawn them: :meth:`discard` marks the ones it
holds and a slot drops them when it takes them; those left in the store are never read back (a
page reads only ``committed`` rows) and are only un-counted. Only held ids are remembered, so
the set stays bounded by the queues.

Shutdown is two-phased: ``stop`` first stops taking tickets (committed-but-unstarted and parked
firings stay in the store and are resumed at the next start), lets running tasks finish within
the grace, then cancels the rest, which kills their process groups. A run cut short this way is
left ``running`` in the store, exactly as after a crash, and recovery re-runs it with attempt + 1.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from schedd.aio import wait_first
from schedd.attempt import Attempts
from schedd.catchup import CatchupDrain, CatchupSettings
from schedd.clock import Clock, ClockReading
from schedd.errors import ScheddError
from schedd.events import FiringEvents
from schedd.lanes import Allocator, Lane, Start
from schedd.model import FiringState, Misfire, Overlap, Policies
from schedd.payload import RunPayload, decode_payload
from schedd.ready import ReadyQueues
from schedd.store.contract import Store
from schedd.store.records import FiringRef, ReadySpan, Ticket
from schedd.workers.pool import WorkerPool

log = logging.getLogger("schedd.runner")

_SERIAL = frozenset({Overlap.QUEUE_ONE, Overlap.REPLACE})


class Runner:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        events: FiringEvents,
        attempts: Attempts,
        pool: WorkerPool,
        *,
        max_workers: int,
        lanes: Mapping[str, Lane] | None = None,
        max_ready: int = 10_000,
        catchup: CatchupSettings | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._attempts = attempts
        self._pool = pool
        self._max = max_workers
        self._lanes = Allocator(lanes or {}, max_workers)
        self.ready = ReadyQueues(
            store,
            clock,
            self._lanes,
            CatchupDrain(catchup or CatchupSettings(), clock.monotonic_ms()),
            max_ready=max_ready,
            catchup_slots=max_workers,
            on_ready=self._fill,
        )
        self._active: Counter[int] = Counter()
        #: schedule id -> {firing id: its stop request} for attempts in flight.
        self._running: defaultdict[int, dict[int, asyncio.Future[str]]] = defaultdict(dict)
        self._parked: defaultdict[int, list[Ticket]] = defaultdict(list)
        #: Held firings an operator removed (``firings remove``): dropped, never started.
        self._discarded: set[int] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pager: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False

    # --- what the dispatcher and status see ------------------------------------------------

    def submit(self, tickets: Sequence[Ticket], as_of: ClockReading | None = None) -> None:
        """Firings were committed: count them, and queue each (or leave it in the store);
        ``as_of``: both clocks as read when they were decided (:meth:`ReadyQueues.offer`). A
        whole commit's tickets at once, so free slots are looked for once, not per firing."""
        if not tickets:  # a pass that committed nothing: no slot can have work now
            return
        active = self._active
        for ticket in tickets:
            if ticket.schedule_id is not None:
                active[ticket.schedule_id] += 1
        self.ready.offer(tickets, as_of)
        self._fill()

    def resume(self, spans: Iterable[ReadySpan], active: Mapping[int, int]) -> None:
        """At start-up: the committed firings found in the store, and their counts per
        schedule; they are read back in order like any left in the store."""
        self._active.update(active)
        self.ready.resume(spans)

    def discard(self, removed: Iterable[FiringRef]) -> None:
        """These firings were cancelled in the store: drop them if they have not started."""
        for ref in removed:
            if ref.id in self.ready.known:
                self._discarded.add(ref.id)
            elif ref.was is FiringState.COMMITTED and ref.schedule_id is not None:
                self._uncount(ref.schedule_id)

    def active_count(self, schedule_id: int) -> int:
        """Firings of this schedule committed (queued, parked) or running here."""
        return self._active[schedule_id]

    def prescale(self, due_soon: int) -> None:
        self._pool.prescale(due_soon)

    @property
    def queued(self) -> int:
        """Tickets held in memory waiting for a slot (parked ones included)."""
        return self.ready.held + sum(len(p) for p in self._parked.values())

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    @property
    def capacity(self) -> int:
        return self._max

    @property
    def pool(self) -> WorkerPool:
        return self._pool

    @property
    def started(self) -> int:
        return self._attempts.started

    @property
    def finished(self) -> int:
        return self._attempts.finished

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        self._pager = asyncio.create_task(self.ready.run(), name="schedd-ready")
        self._fill()

    async def stop(self, grace_ms: int) -> None:
        """Stop taking work, let runs finish within ``grace_ms``, then kill what remains."""
        self._stopping = True
        if self._pager is not None:
            self._pager.cancel()
            await asyncio.gather(self._pager, return_exceptions=True)
        if self._in_flight:
            log.info("waiting up to %d ms for %d running task(s)", grace_ms, len(self._in_flight))
            deadline = self._clock.monotonic_ms() + grace_ms
            await wait_first(asyncio.wait(set(self._in_flight)), self._clock.sleep_until(deadline))
            if self._in_flight:
                log.warning(
                    "killing %d task(s) still running after the grace", len(self._in_flight)
                )
        left = list(self._in_flight)
        for run in left:
            run.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self._attempts.settle()

    # --- the work -----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Start tickets while a slot is free for a lane with work (the allocator decides which)."""
        if not self._started or self._stopping:
            return
        while (start := self._lanes.next(self.ready.waiting_lanes())) is not None:
            ticket = self.ready.pop(start.lane)
            run = asyncio.create_task(self._slot(ticket, start), name=f"schedd-run-{ticket.key}")
            self._in_flight.add(run)

    async def _slot(self, ticket: Ticket, start: Start) -> None:
        finished = True
        try:
            finished = await self._run_one(ticket)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run of %s failed inside schedd", ticket.key)
        finally:
            run = asyncio.current_task()
            assert run is not None
            self._in_flight.discard(run)
            self._lanes.finished(start)
            if finished:
                self._done(ticket)
            self._fill()

    async def _run_one(self, ticket: Ticket) -> bool:
        """Run the ticket's attempt; False if it was parked behind a running one instead."""
        if not self._claim(ticket):
            return True
        payload = await self._payload(ticket)
        if payload is None:  # it is dead now, and never starts
            return True
        if not self._claim(ticket) or await self._misfired(ticket, payload.policies):
            return True
        sid = ticket.schedule_id
        if sid is None or payload.policies.overlap not in _SERIAL:
            self.ready.observe(await self._attempts.run(ticket, payload, None))
            return True
        running = self._running[sid]
        if running:
            if payload.policies.overlap is Overlap.REPLACE:
                for request in running.values():
                    if not request.done():
                        request.set_result(f"replaced by {ticket.key}")
            self._parked[sid].append(ticket)
            return False
        stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        running[ticket.firing_id] = stop
        try:
            self.ready.observe(await self._attempts.run(ticket, payload, stop))
        finally:
            del running[ticket.firing_id]
            if not running:
                del self._running[sid]
                for waiting in self._parked.pop(sid, []):
                    self.ready.put_back(waiting)
        return True

    def _claim(self, ticket: Ticket) -> bool:
        """False if an operator removed the firing while it waited (it is dropped, unstarted)."""
        if ticket.firing_id not in self._discarded:
            return True
        self._discarded.discard(ticket.firing_id)
        log.info("firing %s was removed by an operator before it started", ticket.key)
        return False

    async def _misfired(self, ticket: Ticket, policies: Policies) -> bool:
        """True if the firing waited past its grace under ``misfire = "skip"``: now skipped."""
        if (
            ticket.schedule_id is None
            or ticket.attempt != 1
            or policies.misfire is not Misfire.SKIP
        ):
            return False
        waited, grace = self.ready.waited_ms(ticket), policies.misfire_grace_ms
        if waited <= grace:
            return False
        now = self._clock.wall_ms()
        reason = f"misfire: waited {waited}ms in the queue (grace {grace}ms)"
        log.info("firing %s skipped: %s", ticket.key, reason)
        await self._store.set_firing_state(
            ticket.firing_id, FiringState.SKIPPED, reason=reason, now_ms=now
        )
        self._events.changed(ticket.key, ticket.schedule)
        return True

    async def _payload(self, ticket: Ticket) -> RunPayload | None:
        try:
            return decode_payload(await self._store.load_payload(ticket.payload_id))
        except (ScheddError, ValueError, KeyError, TypeError) as exc:
            log.error("firing %s cannot start: unreadable payload: %s", ticket.key, exc)
            await self._store.set_firing_state(
                ticket.firing_id,
                FiringState.DEAD,
                reason=f"unreadable payload: {exc}",
                now_ms=self._clock.wall_ms(),
            )
            self._events.changed(ticket.key, ticket.schedule)
            return None

    def _done(self, ticket: Ticket) -> None:
        """The ticket's firing ended here (ran, was skipped, dropped or found dead)."""
        self.ready.forget(ticket.firing_id)
        self._discarded.discard(ticket.firing_id)
        if ticket.schedule_id is not None:
            self._uncount(ticket.schedule_id)

    def _uncount(self, schedule_id: int) -> None:
        self._active[schedule_id] -= 1
        if self._active[schedule_id] <= 0:
            del self._active[schedule_id]
