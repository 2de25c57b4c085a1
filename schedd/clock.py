"""The only module that reads clocks.

Everything else receives a :class:`Clock` and works in integer milliseconds, so time-dependent
logic is tested exactly with a fake clock (``tests/fakes.py``) and no float compares creep in.

Two clocks, two jobs: *wall* time (UTC ms since the epoch) says **when** an occurrence is due;
*monotonic* time says **how long to wait**. Waiting on the wall clock would fire early or late
whenever NTP steps the clock; comparing against the monotonic clock alone would fire early when
the wall clock is behind. The dispatcher therefore waits on monotonic time and re-checks the wall
clock before it commits a firing.

``sleep_until`` never uses ``time.sleep`` (libfaketime makes it fail with EINVAL) and may return
slightly early (asyncio rounds to its clock resolution); callers re-check the time they wanted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

#: ``(wall_ms, monotonic_ms)`` read together: an instant by both clocks, so what was measured
#: against the wall clock then can be carried on the monotonic one across a later wall step.
ClockReading = tuple[int, int]


class Clock(Protocol):
    def monotonic_ms(self) -> int:
        """Milliseconds on a clock that never jumps; only differences are meaningful."""

    def wall_ms(self) -> int:
        """UTC milliseconds since the Unix epoch; may jump in either direction."""

    async def sleep_until(self, monotonic_ms: int) -> None:
        """Return at or (by a scheduler rounding) shortly before ``monotonic_ms``."""


def reading(clock: Clock) -> ClockReading:
    """Both clocks, one read right after the other."""
    return clock.wall_ms(), clock.monotonic_ms()


class SystemClock:
    """The real clocks: ``CLOCK_MONOTONIC`` and ``CLOCK_REALTIME``."""

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, monotonic_ms: int) -> None:
        delay_ms = monotonic_ms - self.monotonic_ms()
        await asyncio.sleep(max(delay_ms, 0) / 1000)
