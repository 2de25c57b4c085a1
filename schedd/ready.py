"""The runner's ready queues: bounded in memory, the overflow left in the store, read back in order.

**Bounded** (``[dispatch] max_ready``, DESIGN §4). A committed firing is already safe in SQLite,
so the queues need not hold it to keep it: each lane holds at most its share of ``max_ready``
tickets, and a firing offered beyond that is left in its row (state ``committed``), with only
the id range it falls in remembered. When a lane's queue runs down to half, a page of the oldest
committed firings of that lane is read back (:meth:`Store.ready_page`). A pulse of 500 000 due
firings therefore holds a few thousand tickets, not 500 000, and a restart holds none at first:
every committed firing is read back the same way.

**In order.** Once a lane has firings left in the store, later firings of that lane are left
there too, so none overtakes an older one; the range grows to cover them, and pages walk it by
id. A re-committed firing (a retry, keeping its old id) widens the range downwards and is read
back first. Ids the queues hold or run (:attr:`known`) are skipped when a page returns them.

**Fresh before backlog** (DESIGN §5). Catch-up firings (occurrences that missed their grace)
are never held when offered: they wait in the store and the catch-up drain
(:mod:`schedd.catchup`) releases them at its adaptive rate into a second queue per lane, from
which a slot takes only when the lane has no fresh work. At most ``catchup_slots`` released
firings wait per lane, so tokens are not spent on firings that would only queue.

A page is read on the store's writer, in the order of commits: a firing this process holds cannot
start, end and be forgotten between the page's snapshot and its use, so a page never hands back
a firing that already ran. A firing committed by someone else and paged in before its own
:meth:`~schedd.runner.Runner.submit` arrives is simply held once (the runner counts it then).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable

from schedd.aio import wait_first
from schedd.catchup import CatchupDrain
from schedd.clock import Clock, ClockReading, reading
from schedd.lanes import Allocator
from schedd.model import RunOutcome
from schedd.store.contract import Store
from schedd.store.records import FiringRecord, ReadySpan, Ticket
from schedd.timer import DEFAULT_JUMP_THRESHOLD_MS

log = logging.getLogger("schedd.ready")

#: A change of the wall clock's offset from the monotonic one beyond this is a step: the
#: timer's threshold for a jump (below it, a firing's wait may be off by that much).
STEP_MS = DEFAULT_JUMP_THRESHOLD_MS


class _Range:
    """Ids of committed firings of one stored lane and kind that the queues do not hold, and
    how far the wall clock stood from the monotonic one when they were left here.

    A firing read back is as late as the wall clock said *when it was left*, plus the
    monotonic time since: a wall step while it waits in the store is no wait, as for a firing
    held in memory. The offset is kept per run of ids, a new run only when the clock stepped,
    so what is remembered stays a few numbers per lane however many firings wait."""

    __slots__ = ("_offsets", "first", "last")

    def __init__(self) -> None:
        self.first: int | None = None
        self.last = -1
        #: ``(from_id, wall_ms - monotonic_ms)``, ascending by id.
        self._offsets: list[tuple[int, int]] = []

    def add(self, firing_id: int, offset_ms: int) -> None:
        self.first = firing_id if self.first is None else min(self.first, firing_id)
        self.last = max(self.last, firing_id)
        runs = self._offsets
        # An older id arriving after a step stays in its run: off by the step, as before.
        if not runs or (abs(offset_ms - runs[-1][1]) > STEP_MS and firing_id > runs[-1][0]):
            runs.append((firing_id, offset_ms))

    def offset_of(self, firing_id: int) -> int:
        """The clocks' offset when the firing was left here (that of its run of ids)."""
        runs = self._offsets
        return runs[max(0, bisect.bisect_right(runs, (firing_id, math.inf)) - 1)][1]

    def read(self, read_from: int, through: int) -> None:
        """Every committed firing with an id in ``[read_from, through]`` was read back."""
        if self.first is None or self.first < read_from:
            return  # an older firing arrived meanwhile: the next page starts from it
        self.first = through + 1
        if self.first > self.last:
            self.first, self.last = None, -1
            self._offsets.clear()
            return
        keep = bisect.bisect_right(self._offsets, (self.first, math.inf)) - 1
        del self._offsets[: max(0, keep)]


class ReadyQueues:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        lanes: Allocator,
        drain: CatchupDrain,
        *,
        max_ready: int,
        catchup_slots: int,
        on_ready: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._lanes = lanes
        self.drain = drain
        self.max_ready = max_ready
        self._quota = max(1, max_ready // len(lanes.names))
        self._catchup_slots = max(1, catchup_slots)
        self._on_ready = on_ready
        self._fresh: dict[str, deque[Ticket]] = {n: deque() for n in lanes.names}
        self._backlog: dict[str, deque[Ticket]] = {n: deque() for n in lanes.names}
        #: (stored lane name, catch-up?) -> the ids left in the store.
        self._left: dict[tuple[str, bool], _Range] = {}
        #: Firing ids held, parked or running here (a page skips them), each with the instant it
        #: became ready on the monotonic clock, so the wait it had is measured across wall steps.
        self.known: dict[int, int] = {}
        self.held = 0
        #: The most tickets held at once since start (what the memory bound promises).
        self.peak = 0
        self._draining = False
        self._turn = 0
        self._wake = asyncio.Event()

    # --- intake ----------------------------------------------------------------------------

    def offer(self, tickets: Iterable[Ticket], as_of: ClockReading | None = None) -> None:
        """Hold newly committed firings, or leave them in the store to be read back later.

        ``as_of``: both clocks as read when they were decided. How late each already was is
        taken from them, so a wall step between the commit and this call is not counted as
        waiting. One already held (a page read it back between its commit and this call) is
        not held twice. A whole batch at once: a pulse offers hundreds per commit, and most of
        them only widen a lane's stored range, so that case is checked first."""
        clocks = as_of or reading(self._clock)
        wall, monotonic = clocks
        left_here, known = self._left, self.known
        stored = False
        for ticket in tickets:
            if ticket.firing_id in known:
                continue
            key = (ticket.lane, ticket.catchup)
            left = left_here.get(key)
            if left is None or left.first is None:
                lane = self._lanes.lane_of(ticket.lane)
                if not ticket.catchup and self._room(lane) > 0:
                    self._hold(ticket, lane, clocks)
                    continue
                if left is None:
                    left = left_here[key] = _Range()
            left.add(ticket.firing_id, wall - monotonic)
            stored = True
        if stored:
            self._wake.set()

    def resume(self, spans: Iterable[ReadySpan]) -> None:
        """At start-up: every committed firing is in the store; read them back as above."""
        wall, monotonic = reading(self._clock)
        for span in spans:
            left = self._left.setdefault((span.lane, span.catchup), _Range())
            left.add(span.first_id, wall - monotonic)
            left.add(span.last_id, wall - monotonic)
        self._wake.set()

    def waiting_lanes(self) -> list[str]:
        return [n for n in self._fresh if self._fresh[n] or self._backlog[n]]

    def pop(self, lane: str) -> Ticket:
        """The lane's next ticket: fresh work first, then released backlog."""
        fresh = self._fresh[lane]
        ticket = fresh.popleft() if fresh else self._backlog[lane].popleft()
        self.held -= 1
        if ticket.catchup or len(fresh) + len(self._backlog[lane]) <= self._quota // 2:
            self._wake.set()
        return ticket

    def put_back(self, ticket: Ticket) -> None:
        """A parked ticket whose turn came: it was held before, so no room is asked of it."""
        lane = self._lanes.lane_of(ticket.lane)
        (self._backlog if ticket.catchup else self._fresh)[lane].append(ticket)
        self._count(1)

    def forget(self, firing_id: int) -> None:
        """The firing ended here (finished, skipped, dropped): a page may see it no more."""
        self.known.pop(firing_id, None)

    def waited_ms(self, ticket: Ticket) -> int:
        """How long the held ticket has been ready: on the monotonic clock since it was taken
        in, plus how late it already was then by the wall clock. A wall step while it waits
        changes nothing; the misfire re-check at start reads this."""
        now = self._clock.monotonic_ms()
        return now - self.known.get(ticket.firing_id, now)

    def observe(self, outcome: RunOutcome) -> None:
        """A run ended: while a backlog drains, its outcome steers the drain's rate."""
        if self._draining and (change := self.drain.observe(outcome)) is not None:
            log.info("%s", change)

    @property
    def draining(self) -> bool:
        return self._draining

    # --- reading back -----------------------------------------------------------------------

    async def run(self) -> None:
        """Read back what lanes have room for, release backlog as the drain allows; sleep
        until a lane runs low, something is left in the store, or the next token is due."""
        while True:
            self._wake.clear()
            paged = await self._page_fresh()
            released, next_token_ms = await self._release_backlog()
            if paged or released:
                self._on_ready()
                continue
            if next_token_ms is None:
                await self._wake.wait()
            else:
                await wait_first(self._wake.wait(), self._clock.sleep_until(next_token_ms))

    async def _page_fresh(self) -> bool:
        paged = False
        for (stored, catchup), left in list(self._left.items()):
            lane = self._lanes.lane_of(stored)
            room = self._room(lane)
            if catchup or left.first is None or room < self._quota - self._quota // 2:
                continue
            paged |= (await self._read_back(stored, catchup, left, room, lane))[1]
        return paged

    async def _release_backlog(self) -> tuple[bool, int | None]:
        """Release catch-up firings up to the drain's tokens; ``(read any, next wake-up)``."""
        now = self._clock.monotonic_ms()
        pending = [(k[0], r) for k, r in self._left.items() if k[1] and r.first is not None]
        if not pending:
            if self._draining and not any(self._backlog.values()):
                self._draining = False
                self.drain.reset(now)
                log.debug("catch-up backlog drained")
            return False, None
        if not self._draining:
            self._draining = True
            self.drain.reset(now)
            log.debug("catch-up backlog found; draining from %g/s", self.drain.rate)
        tokens = self.drain.available(now)
        released, progressed = 0, False
        self._turn = (self._turn + 1) % len(pending)
        for stored, left in pending[self._turn :] + pending[: self._turn]:
            lane = self._lanes.lane_of(stored)
            room = min(self._room(lane), self._catchup_slots - len(self._backlog[lane]))
            want = min(tokens - released, room)
            if want > 0:
                taken, read = await self._read_back(stored, True, left, want, lane)
                released, progressed = released + taken, progressed or read
        self.drain.take(released)
        if self.drain.available(now) >= 1:
            return progressed, None  # no room left: a slot taking backlog wakes us
        return progressed, self.drain.next_token_ms(now)

    async def _read_back(
        self, stored: str, catchup: bool, left: _Range, limit: int, lane: str
    ) -> tuple[int, bool]:
        """Read up to ``limit`` firings of ``left`` back into ``lane``: ``(new here, any read)``."""
        assert left.first is not None
        first, last = left.first, left.last
        page: list[FiringRecord] = await self._store.ready_page(
            lane=stored, catchup=catchup, first_id=first, last_id=last, limit=limit
        )
        taken, now = 0, self._clock.monotonic_ms()
        for record in page:
            if record.id not in self.known:
                self._hold(record.ticket(), lane, (now + left.offset_of(record.id), now))
                taken += 1
        left.read(first, page[-1].id if len(page) == limit else last)
        return taken, bool(page)

    # --- bookkeeping ------------------------------------------------------------------------

    def _hold(self, ticket: Ticket, lane: str, as_of: ClockReading | None = None) -> None:
        (self._backlog if ticket.catchup else self._fresh)[lane].append(ticket)
        wall, monotonic = as_of or reading(self._clock)
        self.known[ticket.firing_id] = monotonic - max(0, wall - ticket.ready_ms)
        self._count(1)

    def _count(self, n: int) -> None:
        self.held += n
        self.peak = max(self.peak, self.held)

    def _room(self, lane: str) -> int:
        return self._quota - len(self._fresh[lane]) - len(self._backlog[lane])
