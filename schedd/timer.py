"""The wheel's async driver: tickless waiting on the monotonic clock, re-mapped on clock jumps.

Handles are armed with a *wall-clock* due time and stored in the wheel at the equivalent
*monotonic* time (``wall_due - offset``, where ``offset = wall - monotonic``). The loop sleeps
until the wheel's next expiry or until an earlier handle is armed, and never spins while idle.

Why monotonic: a wall-clock step must not make everything fire at once (or never). The offset
is sampled on every wake-up:

* a change below ``jump_threshold_ms`` is ordinary NTP slewing; the new offset is used for
  handles armed from now on, and the dispatcher's wall-clock re-check absorbs the rest;
* a larger change is a **clock jump**: it is logged and counted, and every handle is shifted by
  the jump so its wall-clock due time is kept (a forward jump makes handles due sooner: they
  become misfires handled by policy; a backward one makes them wait, and the schedule's
  high-water mark guarantees nothing is re-fired).

Expired keys are handed out at most ``limit`` at a time, what fell due last first (see the
wheel's rounds), so a consumer taking a 500 000-handle pulse in steps keeps one loop callback per
step, and whatever falls due meanwhile waits for one step, not for the pulse. Keys armed
``first`` (the dispatcher's urgent lanes) live in a wheel of their own and are handed out alone,
ahead of every other expired key, without looking through a pulse to find them.

This module never decides whether something may fire: the dispatcher re-checks the wall clock
against the stored due time (never early) and re-arms for the difference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass

from schedd import failpoints
from schedd.aio import wait_first
from schedd.clock import Clock
from schedd.wheel import TimingWheel

log = logging.getLogger("schedd.timer")

DEFAULT_JUMP_THRESHOLD_MS = 1000
#: The longest the loop sleeps without looking at the clocks. Linux can report clock steps
#: directly (timerfd with TFD_TIMER_CANCEL_ON_SET) but Python cannot reach it; one wake-up a
#: second bounds how late a forward jump is noticed at negligible cost.
JUMP_CHECK_MS = 1000


@dataclass
class ClockJumps:
    count: int = 0
    last_ms: int | None = None  # size of the last jump, signed
    last_at_wall_ms: int | None = None


class Timer:
    def __init__(self, clock: Clock, *, jump_threshold_ms: int = DEFAULT_JUMP_THRESHOLD_MS) -> None:
        self._clock = clock
        self._threshold = jump_threshold_ms
        self._offset = clock.wall_ms() - clock.monotonic_ms()
        #: Keys armed ``first``, then the rest; a key is in one of them at most.
        self._wheels: tuple[TimingWheel[Hashable], TimingWheel[Hashable]] = (
            TimingWheel(clock.monotonic_ms()),
            TimingWheel(clock.monotonic_ms()),
        )
        self._wake = asyncio.Event()
        self._sleeping_until: int | None = None  # None: awake
        self.jumps = ClockJumps()
        #: Monotonic ms of the loop's last wake-up: it wakes at least every ``JUMP_CHECK_MS``
        #: while the dispatch loop is waiting here, so an old value means the loop is stuck.
        self.last_wake_mono_ms = clock.monotonic_ms()

    def __len__(self) -> int:
        return sum(map(len, self._wheels))

    def __contains__(self, key: object) -> bool:
        return any(key in wheel for wheel in self._wheels)

    def arm(self, key: Hashable, wall_due_ms: int, *, first: bool = False) -> None:
        """(Re-)arm ``key`` to expire when the wall clock reaches ``wall_due_ms``; a ``first``
        key is handed out ahead of the others once expired."""
        mono_due = wall_due_ms - self._offset
        first_wheel, rest = self._wheels
        into, other = (first_wheel, rest) if first else (rest, first_wheel)
        other.cancel(key)
        into.insert(key, mono_due)
        if self._sleeping_until is None or mono_due < self._sleeping_until:
            self._wake.set()

    def cancel(self, key: Hashable) -> bool:
        """Forget ``key``, also expired but not handed out yet; False if it was not armed."""
        first, rest = self._wheels
        return first.cancel(key) | rest.cancel(key)

    def wall_now(self) -> int:
        return self._clock.wall_ms()

    async def expired(self, limit: int) -> list[Hashable]:
        """Wait until at least one handle expires; return up to ``limit`` expired keys (see
        :meth:`expired_now`)."""
        while True:
            await failpoints.hit("timer_wake")
            if popped := self.expired_now(limit):
                return popped
            expiries = [nxt for wheel in self._wheels if (nxt := wheel.next_expiry()) is not None]
            await self._sleep(min([self._clock.monotonic_ms() + JUMP_CHECK_MS, *expiries]))

    def expired_now(self, limit: int) -> list[Hashable]:
        """Up to ``limit`` keys expired by now, without waiting: the ``first`` ones alone if any
        expired, else the others, what fell due last first, each wake-up's earliest first. The
        rest stay armed for the next call (the dispatcher asks again between the commits of a
        long pulse, so what fell due meanwhile is not stuck behind it)."""
        self._check_offset()
        mono = self._clock.monotonic_ms()
        self.last_wake_mono_ms = mono
        for wheel in self._wheels:
            if expired := wheel.advance(max(mono, wheel.now_ms), limit):
                return [key for key, _ in expired]
        return []

    async def _sleep(self, mono_deadline: int) -> None:
        self._wake.clear()
        self._sleeping_until = mono_deadline
        try:
            await wait_first(self._clock.sleep_until(mono_deadline), self._wake.wait())
        finally:
            self._sleeping_until = None

    def _check_offset(self) -> None:
        offset = self._clock.wall_ms() - self._clock.monotonic_ms()
        delta = offset - self._offset
        self._offset = offset
        if abs(delta) < self._threshold:
            return
        self.jumps.count += 1
        self.jumps.last_ms = delta
        self.jumps.last_at_wall_ms = self._clock.wall_ms()
        direction = "forward" if delta > 0 else "back"
        log.warning(
            "wall clock jumped %s by %d ms; re-mapping %d timers", direction, abs(delta), len(self)
        )
        for wheel in self._wheels:
            for key, mono_due in wheel.drain():
                wheel.insert(key, mono_due - delta)
