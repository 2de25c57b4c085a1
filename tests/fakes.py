"""Test doubles shared by the suite. Only the clock is faked: the store is always real SQLite."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """A clock that moves only when the test says so.

    ``advance`` moves both clocks together (time passing); ``jump_wall`` moves the wall clock
    alone, as an NTP step or an operator's ``date -s`` would. Sleepers wake when ``advance``
    reaches their deadline, in deadline order, and the test can wait for their reactions.
    """

    def __init__(self, wall_ms: int = 1_767_225_600_000, monotonic_ms: int = 1_000_000) -> None:
        self._mono = monotonic_ms
        self._offset = wall_ms - monotonic_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._generation = 0
        self._settled = asyncio.Event()

    def monotonic_ms(self) -> int:
        return self._mono

    def wall_ms(self) -> int:
        return self._mono + self._offset

    async def sleep_until(self, monotonic_ms: int) -> None:
        if monotonic_ms <= self._mono:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (monotonic_ms, next(self._seq), fut))
        self._settled.set()
        await fut

    def advance(self, ms: int) -> None:
        """Move both clocks forward and wake every sleeper whose deadline has come."""
        assert ms >= 0, "monotonic time never goes back"
        self._mono += ms
        woke = False
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
                woke = True
        if woke:  # a woken loop is settled again once it goes back to sleep
            self._settled.clear()
        else:
            self._settled.set()

    def elapse(self, ms: int) -> None:
        """Time spent inside a busy step of the code under test (a slow commit): both clocks
        move and ``settled`` is left alone; no sleeper may fall due meanwhile."""
        self._mono += ms
        assert not self._sleepers or self._sleepers[0][0] > self._mono, "use advance()"

    def jump_wall(self, ms: int) -> None:
        """Step the wall clock alone (positive: forward, negative: back)."""
        self._offset += ms

    def unsettle(self) -> None:
        """Make ``settled`` wait for the next sleep (call before starting a loop)."""
        self._settled.clear()

    async def settled(self) -> None:
        """Wait until, after the last ``advance``, some loop went back to sleep on this clock.

        With one sleeping loop under test (the dispatcher's timer), this means it has handled
        everything the advance made due: the test can then assert what did *not* happen.
        """
        await self._settled.wait()

    def next_deadline(self) -> int | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None


class Gates:
    """Per-firing gates that the tests' stand-ins for attempts hold a run behind until the
    test opens them, so which firing holds a slot, and for how long, is the test's choice."""

    def __init__(self) -> None:
        self._gates: dict[int, asyncio.Event] = {}

    async def wait(self, firing_id: int) -> None:
        await self._gate(firing_id).wait()

    def open(self, firing_id: int) -> None:
        self._gate(firing_id).set()

    def open_all(self) -> None:
        for gate in self._gates.values():
            gate.set()

    def is_open(self, firing_id: int) -> bool:
        return self._gate(firing_id).is_set()

    def _gate(self, firing_id: int) -> asyncio.Event:
        return self._gates.setdefault(firing_id, asyncio.Event())
