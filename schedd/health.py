"""Is scheduling actually moving? One answer, for the watchdog, the heartbeat and ``STATUS=``.

A process that is alive is not the same as a scheduler that schedules: the failure stories
behind schedd include a dispatcher wedged on a lock while its process, its port and its PID file
all looked fine. So health is judged from the dispatch machinery itself:

* **the loop advances**: the timer, which the dispatch loop waits in, wakes at least every
  second (``timer.JUMP_CHECK_MS``); a last wake-up older than ``STALL_MS`` means the loop is
  stuck in a commit, a lock or a bug. A long commit (a pulse of 500 000 firings) can legitimately
  hold it for seconds; ``STALL_MS`` is above that and far below ``WatchdogSec``.
* **commits succeed**: after a failed write-ahead commit (disk full, I/O error) nothing fires
  until one succeeds again, whatever the loop is doing.

systemd's watchdog and an outside monitor then stop hearing from schedd exactly when firings
stop, not only when the process dies.
"""

from __future__ import annotations

from typing import Protocol

from schedd.clock import Clock
from schedd.timer import JUMP_CHECK_MS, Timer

#: How long the dispatch loop may go without waking before it counts as stuck.
STALL_MS = 10_000


def stall_ms_for(watchdog_ms: int | None) -> int:
    """The stall bound under a watchdog: noticed within half its interval, so a stuck loop
    misses a ping well before systemd gives up, but never below two of the timer's own
    wake-ups (a healthy idle loop wakes once per ``JUMP_CHECK_MS``)."""
    if watchdog_ms is None:
        return STALL_MS
    return max(2 * JUMP_CHECK_MS, min(STALL_MS, watchdog_ms // 2))


class Commits(Protocol):
    """The dispatcher as health sees it: why its last write-ahead commit failed, if it did."""

    @property
    def failing(self) -> str | None: ...


class Health:
    def __init__(
        self, timer: Timer, dispatcher: Commits, clock: Clock, *, stall_ms: int = STALL_MS
    ) -> None:
        self._timer = timer
        self._dispatcher = dispatcher
        self._clock = clock
        self._stall_ms = stall_ms

    def problem(self) -> str | None:
        """None when scheduling is healthy; otherwise why not, for a log line."""
        idle = self._clock.monotonic_ms() - self._timer.last_wake_mono_ms
        if idle > self._stall_ms:
            return f"the dispatch loop has not advanced for {idle} ms"
        if self._dispatcher.failing is not None:
            return f"write-ahead commits are failing: {self._dispatcher.failing}"
        return None
