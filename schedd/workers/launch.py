"""Starting one Python worker: its process, its start-up output, its READY handshake.

Split from :mod:`schedd.workers.pool` so that what it takes to turn the application's
interpreter into a worker fit for work is one small class that knows nothing of the pool's
bookkeeping: the :class:`~schedd.workers.fleet.Fleet` decides when a worker is launched, what
it joins once ready and how it is buried when it is not.

* **Handshake before work.** A worker is given a task only after its ``ready`` message, which
  must come within ``start_timeout_ms``; otherwise it is killed, and the run that needed it ends
  ``FAILED`` with ``worker failed to start: ...`` (with the worker's own output, e.g. a
  traceback from a broken interpreter), not with an exception.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from pathlib import Path

from schedd.cli.pyz import worker_program
from schedd.clock import Clock
from schedd.workers import pyworker
from schedd.workers.messages import how_it_ended, parse_ready
from schedd.workers.outcome import duration
from schedd.workers.output import OutputTail
from schedd.workers.pooldata import PoolSettings
from schedd.workers.pyworker import ProtocolError
from schedd.workers.spawn import Child, wait_any
from schedd.workers.worker import Worker

#: The worker program, by absolute path: the application's interpreter cannot import schedd.
PYWORKER = str(Path(pyworker.__file__).resolve())
#: How much of a failed worker's start-up output goes into the failure reason.
STARTUP_OUTPUT_BYTES = 2_000
#: Reason of runs cut short because the pool is closing.
CLOSED_REASON = "worker pool closed"


class StartFailed(Exception):
    """A worker could not be started (or the pool closed while one was needed)."""


class Launcher:
    """Starts worker processes and tells whether they became ready; counts into ``counts``."""

    def __init__(self, settings: PoolSettings, clock: Clock, counts: Counter[str]) -> None:
        self._settings = settings
        self._clock = clock
        self._counts = counts
        self._env = dict(settings.env)
        if settings.pythonpath:
            self._env["PYTHONPATH"] = os.pathsep.join(settings.pythonpath)

    def spawn(self) -> Worker:
        """Start a worker process, its output kept for a start-up failure's reason."""
        ours, theirs = socket.socketpair()
        python = self._settings.python
        try:
            child = Child.spawn(
                (python, "-u", *worker_program(PYWORKER), str(theirs.fileno())),
                cwd=self._settings.cwd,
                env=self._env,
                pass_fds=(theirs.fileno(),),
            )
        except (OSError, ValueError) as exc:
            ours.close()
            self._counts["failed_starts"] += 1
            raise StartFailed(f"cannot run {python!r}: {exc}") from None
        finally:
            theirs.close()
        self._counts["spawned"] += 1
        startup = OutputTail(STARTUP_OUTPUT_BYTES)
        child.sink = startup
        return Worker(child, ours, startup)

    async def handshake(self, worker: Worker, closing: asyncio.Future[None]) -> str | None:
        """Why the worker is not ready, or ``None`` once its READY came."""
        timeout = self._settings.start_timeout_ms
        deadline = self._clock.monotonic_ms() + timeout
        child = worker.child
        first = await wait_any(
            self._clock, deadline, worker.ready, child.exited, worker.broken, closing
        )
        if first is worker.ready:
            try:
                parse_ready(worker.take())
            except ProtocolError as exc:
                self._counts["protocol_errors"] += 1
                return f"broke the protocol: {exc}"
            return None
        if first is None:
            return f"no READY within {duration(timeout)}"
        if first is closing:
            return CLOSED_REASON
        if first is worker.broken and not worker.hung_up:
            self._counts["protocol_errors"] += 1
            return f"broke the protocol: {worker.problem}"
        return "exited before READY"


def start_failure(worker: Worker, problem: str, returncode: int) -> StartFailed:
    """A buried worker's failure to start, with what it printed meanwhile."""
    output = worker.startup_output.getvalue().decode("utf-8", "replace").strip()
    message = f"{problem} ({how_it_ended(returncode)})"
    return StartFailed(f"{message}; output: {output}" if output else message)
