"""Alarm hooks: ``on_quarantine`` (a poison task was quarantined) and ``on_overdue`` (a schedule
has not succeeded within its ``expect_success_within``).

Both are work that is silently not done unless a human hears about it. So besides the log line,
an operator-supplied argv runs with the details in its environment (DESIGN §5)::

    on_quarantine: SCHEDD_SCHEDULE  SCHEDD_IDEMPOTENCY_KEY  SCHEDD_ATTEMPT  SCHEDD_SCHEDULED_FOR
                   SCHEDD_FIRING_ID  SCHEDD_QUARANTINE_REASON
    on_overdue:    SCHEDD_SCHEDULE  SCHEDD_OVERDUE_SINCE  SCHEDD_LAST_SUCCESS

The hook runs as a command task does (own process group, no inherited environment beyond the
allow-list, bounded output) but outside the worker slots, so a pool full of poison cannot keep
the alarm from going off, and with a fixed timeout so a hanging pager script cannot pile up.
Its failure is logged, never retried: the log line and the DLQ still say what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from schedd.aio import wait_first
from schedd.clock import Clock
from schedd.model import RunOutcome
from schedd.workers.command import CommandRequest, run_command
from schedd.workers.environment import build_env
from schedd.workers.limits import LimitedLauncher
from schedd.workers.procs import ProcessIdentity

log = logging.getLogger("schedd.hooks")

HOOK_TIMEOUT_MS = 60_000
HOOK_KILL_GRACE_MS = 5_000
HOOK_OUTPUT_BYTES = 4096


class Hooks:
    def __init__(
        self,
        clock: Clock,
        launcher: LimitedLauncher,
        *,
        inherited_env: Mapping[str, str],
        env_allow: Sequence[str],
    ) -> None:
        self._clock = clock
        self._launcher = launcher
        self._inherited = dict(inherited_env)
        self._allow = tuple(env_allow)
        self._running: set[asyncio.Task[None]] = set()

    def quarantined(
        self, argv: Sequence[str], firing: Mapping[str, str], *, firing_id: int, reason: str
    ) -> None:
        """Start the hook in the background; ``firing`` holds the ``SCHEDD_*`` firing vars."""
        extra = {"SCHEDD_FIRING_ID": str(firing_id), "SCHEDD_QUARANTINE_REASON": reason}
        self._start("on_quarantine", firing.get("SCHEDD_IDEMPOTENCY_KEY", ""), argv, firing, extra)

    def overdue(self, argv: Sequence[str], details: Mapping[str, str]) -> None:
        """Start the ``on_overdue`` hook; ``details`` are its ``SCHEDD_*`` variables."""
        schedule = details.get("SCHEDD_SCHEDULE", "")
        extra = {k: v for k, v in details.items() if k != "SCHEDD_SCHEDULE"}
        self._start("on_overdue", schedule, argv, {"SCHEDD_SCHEDULE": schedule}, extra)

    def _start(
        self,
        kind: str,
        about: str,
        argv: Sequence[str],
        firing: Mapping[str, str],
        extra: Mapping[str, str],
    ) -> None:
        env = build_env(inherited=self._inherited, allow=self._allow, task_env=extra, firing=firing)
        request = CommandRequest(
            argv=tuple(argv),
            cwd=None,
            env=env,
            shell=False,
            timeout_ms=HOOK_TIMEOUT_MS,
            kill_grace_ms=HOOK_KILL_GRACE_MS,
            output_tail_bytes=HOOK_OUTPUT_BYTES,
        )
        task = asyncio.create_task(self._run(request, kind, about))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self, grace_ms: int) -> None:
        """Let running hooks finish within ``grace_ms``; cancel (kill) what remains."""
        if self._running:
            deadline = self._clock.monotonic_ms() + grace_ms
            await wait_first(asyncio.wait(set(self._running)), self._clock.sleep_until(deadline))
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self, request: CommandRequest, kind: str, about: str) -> None:
        async def spawned(_: ProcessIdentity) -> None:
            pass

        result = await run_command(request, self._clock, on_spawn=spawned, launcher=self._launcher)
        if result.outcome is RunOutcome.SUCCEEDED:
            log.info("%s hook for %s succeeded", kind, about)
        else:
            log.error(
                "%s hook for %s %s: %s; output: %r",
                kind,
                about,
                result.outcome.value,
                result.reason,
                result.output[-500:],
            )
