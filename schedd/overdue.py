"""``expect_success_within``: notice a schedule that has quietly stopped succeeding.

A cron job that fails every night, or never starts because its host changed, produces no signal
in cron; here each run's failure is logged, but a failure nobody reads is no better. A schedule
with ``expect_success_within = "26h"`` instead makes silence itself an alarm: if no run of it
succeeds within the window, schedd logs an error, exports ``schedd_schedule_overdue{schedule}``
(from :meth:`OverdueWatch.overdue`) and runs the schedule's ``on_overdue`` argv.

*Episodes*: a schedule becomes overdue once, at ``since + window`` (``since`` is its last
success, or when it was added if it never succeeded since), and stays overdue until a run
succeeds (or a reload gives it a window it is within again). The hook runs once per episode, not
once per check: a pager that fires every minute for a schedule that is down for a day is noise.

*Time*: successes are wall-clock instants, so deadlines are too; but waiting happens on the
monotonic clock (a wall step must not wake or postpone a sleep by hours). The loop sleeps for the
remaining wall time on the monotonic clock and re-reads the wall clock when it wakes: a backward
step leaves the deadline ahead, so it sleeps again (never early); a forward step is noticed at
the next wake, which is at most ``RECHECK_MS`` away (a little late is fine for windows of hours).

The hook is *started* through ``run_hook`` and owned by it (the daemon passes its hook runner,
which gives hooks their own process group, timeout, bounded output and shutdown grace, and logs
their outcome), so a hanging pager script never holds this loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from schedd.aio import wait_first
from schedd.clock import Clock
from schedd.keys import format_instant
from schedd.units import format_duration

log = logging.getLogger("schedd.overdue")

#: The longest the loop sleeps without reading the wall clock: bounds how late a forward wall
#: step is noticed.
RECHECK_MS = 60_000

#: ``run_hook(argv, env)``: start ``argv`` in the background with the ``SCHEDD_*`` variables
#: ``env`` added to its environment; must return at once.
RunHook = Callable[[tuple[str, ...], Mapping[str, str]], None]


@dataclass
class _Expectation:
    window_ms: int
    hook: tuple[str, ...] | None
    #: Where the current window starts: the last success, or when the schedule was added.
    since_ms: int
    last_success_ms: int | None
    overdue: bool = False

    @property
    def deadline_ms(self) -> int:
        return self.since_ms + self.window_ms


class OverdueWatch:
    def __init__(self, clock: Clock, run_hook: RunHook | None = None) -> None:
        self._clock = clock
        self._run_hook = run_hook
        self._watched: dict[str, _Expectation] = {}
        self._changed = asyncio.Event()

    def track(
        self,
        schedule: str,
        window_ms: int,
        hook: tuple[str, ...] | None,
        *,
        last_success_ms: int | None,
        added_ms: int,
    ) -> None:
        """Watch ``schedule`` (or change how): its window starts at its last success, or when it
        was added if that is later (a re-added name gets a full window). Re-tracking keeps what
        the watch has seen since (a later success, an overdue episode in progress), so it is
        safe to call for every schedule on every reload."""
        since = added_ms if last_success_ms is None else max(added_ms, last_success_ms)
        old = self._watched.get(schedule)
        e = _Expectation(window_ms, hook, since, last_success_ms)
        if old is not None:
            e.since_ms = max(e.since_ms, old.since_ms)
            e.last_success_ms = _later(e.last_success_ms, old.last_success_ms)
            e.overdue = old.overdue and self._clock.wall_ms() >= e.deadline_ms
            if old.overdue and not e.overdue:
                log.info(
                    "schedule %s is no longer overdue: its window is now %s",
                    schedule,
                    format_duration(window_ms),
                )
        self._watched[schedule] = e
        self._changed.set()

    def forget(self, schedule: str) -> None:
        """Stop watching (the schedule was removed or no longer sets a window)."""
        self._watched.pop(schedule, None)

    def succeeded(self, schedule: str, wall_ms: int) -> None:
        """A run of ``schedule`` succeeded at ``wall_ms``: its window starts again."""
        e = self._watched.get(schedule)
        if e is None:
            return
        if e.overdue:
            log.info(
                "schedule %s succeeded again; it had been overdue since %s",
                schedule,
                format_instant(e.deadline_ms),
            )
            e.overdue = False
        e.since_ms = max(e.since_ms, wall_ms)
        e.last_success_ms = _later(e.last_success_ms, wall_ms)
        self._changed.set()

    def overdue(self) -> Mapping[str, bool]:
        """Every watched schedule and whether it is in an overdue episode (for the metric)."""
        return {name: e.overdue for name, e in self._watched.items()}

    async def run(self) -> None:
        """Mark schedules overdue as their deadlines pass, forever. Raises only
        ``CancelledError``."""
        while True:
            now = self._clock.wall_ms()
            for name, e in self._watched.items():
                if not e.overdue and now >= e.deadline_ms:
                    self._became_overdue(name, e)
            waits = [e.deadline_ms - now for e in self._watched.values() if not e.overdue]
            self._changed.clear()
            wake = self._clock.monotonic_ms() + min([RECHECK_MS, *waits])
            await wait_first(self._clock.sleep_until(wake), self._changed.wait())

    def _became_overdue(self, schedule: str, e: _Expectation) -> None:
        e.overdue = True
        origin = "" if e.since_ms == e.last_success_ms else " (when it was added)"
        log.error(
            "schedule %s overdue: no successful run since %s%s (expected within %s)",
            schedule,
            format_instant(e.since_ms),
            origin,
            format_duration(e.window_ms),
        )
        if e.hook is None or self._run_hook is None:
            return
        env = {
            "SCHEDD_SCHEDULE": schedule,
            "SCHEDD_OVERDUE_SINCE": format_instant(e.deadline_ms),
            "SCHEDD_LAST_SUCCESS": ""
            if e.last_success_ms is None
            else format_instant(e.last_success_ms),
        }
        try:
            self._run_hook(e.hook, env)
        except Exception:
            log.exception("could not start the on_overdue hook of %s", schedule)


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
