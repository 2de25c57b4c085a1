"""systemd liveness: ``WATCHDOG=1`` only while scheduling is healthy, and a ``STATUS=`` line.

With ``WatchdogSec=`` set, systemd restarts a service that stops pinging. Pinging from a timer
that runs no matter what would only prove the event loop runs; here each ping is conditional on
:class:`~schedd.health.Health` (the dispatch loop advancing, commits succeeding), so a wedged
dispatcher is restarted even though the process, its socket and its event loop look alive.
Pings go at half the watchdog interval, as sd_watchdog_enabled(3) advises.

``STATUS=`` (shown by ``systemctl status``) is refreshed on the same beat, or every
``STATUS_EVERY_MS`` without a watchdog: schedules, ready and running firings, the oldest ready
firing's lag, or why scheduling is unhealthy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from schedd.clock import Clock
from schedd.health import Health
from schedd.sdnotify import Notifier

log = logging.getLogger("schedd")

STATUS_EVERY_MS = 10_000


async def supervise(
    notifier: Notifier, health: Health, clock: Clock, status: Callable[[], Awaitable[str]]
) -> None:
    """Forever: ping the watchdog while healthy and keep ``STATUS=`` current."""
    watchdog = notifier.watchdog_ms
    beat = max(1, watchdog // 2) if watchdog else STATUS_EVERY_MS
    if watchdog:
        log.info(
            "systemd watchdog: %d ms; pinging every %d ms while scheduling is healthy",
            watchdog,
            beat,
        )
    was_healthy = True
    while True:
        await clock.sleep_until(clock.monotonic_ms() + beat)
        problem = health.problem()
        if problem is None:
            if not was_healthy:
                log.info("scheduling is healthy again; watchdog pings resumed")
            fields = [f"STATUS={await status()}"]
            if watchdog:
                fields.insert(0, "WATCHDOG=1")
            notifier.notify(*fields)
        else:
            if was_healthy:
                log.error("scheduling is unhealthy (%s); withholding watchdog pings", problem)
            notifier.notify(f"STATUS=unhealthy: {problem}")
        was_healthy = problem is None
