"""A pool of persistent Python worker processes, supervised as distrusted children.

Python tasks run in long-lived workers (``pyworker.py`` under the application's interpreter),
so their imports stay warm between runs (DESIGN §6). Each worker is a process started by
:mod:`schedd.workers.spawn`: its own session and process group, a pidfd for its exit, its
stdout+stderr on one pipe. A Unix socketpair carries the length-framed JSON protocol described
in :mod:`schedd.workers.pyworker`. The model is anyio's ``to_process``, with the daemon's extra
duties: timeouts, limits, output capture, recycling.

:class:`WorkerPool` is the pool's face, and this module holds one run supervised on a worker:
the call encoded and sent; its answer, the worker's exit, a broken channel, the deadline or a
stop watched; how it ended classified; the worker given back or recycled. Which workers exist
and how they come and go (a worker's life, handing out, retiring, burying, the idle shrink,
the counts) is the :class:`~schedd.workers.fleet.Fleet`'s; starting one worker and its READY
handshake, the :class:`~schedd.workers.launch.Launcher`'s. The run is kept apart from the fleet
because it is the hot path, and the rules of how a run ends are its own.

* **Distrust.** Any frame or message outside the protocol, from any worker in any state, gets
  the worker's whole group SIGKILLed; during a task that is a ``CRASH``. A worker that closes
  its channel is given ``EOF_GRACE_MS`` to show it is dying (its exit then classifies the run)
  before it is treated the same way.
* **Output attribution.** At the start of a run the worker's output sink is swapped for a fresh
  :class:`~schedd.workers.output.OutputTail`. The worker flushes its streams before it answers
  ``done``, so on ``done`` everything the task printed is already in the pipe, and a
  synchronous :meth:`~schedd.workers.spawn.Child.drain` takes it before the sink is swapped
  back: run *k*'s output never lands in run *k+1*. Output of an idle worker (a task's leftover
  thread or subprocess) is counted and dropped.
* **How a run ends** (the worker's ``done`` answer, or what supervision saw):

  ====================================  ==================  ===============================
  what happened                         outcome             reason
  ====================================  ==================  ===============================
  done, ok                              ``SUCCEEDED``
  done, exception / import failure      ``FAILED``          ``exception: ValueError: boom``
  done, MemoryError under memory limit  ``RESOURCE_LIMIT``  ``memory limit of N bytes ...``
  deadline passed                       ``TIMEOUT``         ``timeout after 5s``
  ``stop`` resolved / pool closing      ``CANCELLED``       the stop reason
  killed by SIGXCPU under a CPU limit   ``RESOURCE_LIMIT``  ``CPU limit of Ns reached ...``
  killed by another signal              ``CRASH``           ``killed by SIGSEGV``
  worker exited                         ``CRASH``           ``worker exited with status N
                                                            during the task``
  protocol violation                    ``CRASH``           ``worker broke the protocol: ...``
  ====================================  ==================  ===============================

  Timeouts and stops take the worker's group down with :func:`~schedd.workers.spawn.stop_group`
  (SIGTERM, the call's grace, SIGKILL), grandchildren included. The CPU time used by the
  worker *before* the run is subtracted before a SIGKILL is blamed on the CPU limit.
* **Recycling.** After ``done``, a worker is retired (its channel closed, which tells it to
  exit; SIGKILL after ``retire_grace_ms``) once it has run ``max_tasks_per_worker`` tasks, once
  its RSS (``/proc/<pid>/statm``) exceeds ``max_worker_rss_bytes``, or when it asks to (after a
  ``MemoryError``, or when it could not restore a lowered hard rlimit).

Known limits: a task's background process that outlives the task keeps running inside the
worker's group until the worker is retired or dies; a process that escaped the group with
``setsid`` survives even that (as for command tasks). ``stop`` is honoured once a worker is
running the task, not while the run waits for a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from schedd.clock import Clock
from schedd.errors import Unavailable
from schedd.model import RunOutcome
from schedd.record import record
from schedd.workers.fleet import Fleet
from schedd.workers.launch import CLOSED_REASON, StartFailed
from schedd.workers.messages import Done, PythonCall, parse_done, result_of, run_message
from schedd.workers.outcome import Ending, RunResult, classify
from schedd.workers.output import OutputTail
from schedd.workers.pooldata import PoolSettings, PoolStats
from schedd.workers.procs import ProcessIdentity, cpu_ms, rss_bytes
from schedd.workers.pyworker import ProtocolError, encode
from schedd.workers.spawn import done_of, failure_of, stop_group, wait_any, wait_until
from schedd.workers.worker import Worker

__all__ = ["PoolSettings", "PoolStats", "WorkerPool"]

log = logging.getLogger("schedd.workers")

#: How long a worker that closed its control channel gets to exit before it is killed.
EOF_GRACE_MS = 1_000


@record
class _Run:
    id: int
    call: PythonCall
    #: Resolved by the worker's answer.
    arrival: asyncio.Future[None]
    #: Sending the rest of the frame, if it did not fit the socket's buffer at once.
    sending: asyncio.Task[None] | None
    deadline: int | None
    stop: asyncio.Future[str] | None
    #: The caller storing the run's start: only its failure concerns the run.
    started: asyncio.Future[object]
    #: The worker's CPU time before the run, so a CPU-limit kill is judged on the run's alone.
    cpu_before: int | None


class WorkerPool:
    """``min_workers``..``max_workers`` Python workers; see the module docstring."""

    def __init__(self, settings: PoolSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._fleet = Fleet(settings, clock)
        #: The fleet's counts: how runs end counts towards its stats too.
        self._counts = self._fleet.counts
        self._ids = itertools.count(1)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch ``min_workers`` and wait for their READY; :class:`~schedd.errors.Unavailable`
        if one fails (see :meth:`Fleet.start`)."""
        await self._fleet.start()

    async def close(self) -> None:
        """Retire or kill every worker and return once all are reaped (idempotent)."""
        await self._fleet.close()

    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def prescale(self, wanted: int) -> asyncio.Future[list[None]]:
        """Launch workers towards ``min(max_workers, wanted)`` (see :meth:`Fleet.prescale`)."""
        return self._fleet.prescale(wanted)

    def stats(self) -> PoolStats:
        return self._fleet.stats()

    # --- a run ----------------------------------------------------------------------------

    async def run(
        self,
        call: PythonCall,
        *,
        on_spawn: Callable[[ProcessIdentity], Awaitable[object]],
        stop: asyncio.Future[str] | None = None,
    ) -> RunResult:
        """Run ``call`` in a worker to its result; only cancellation, ``on_spawn`` and a pool
        not running (:class:`~schedd.errors.Unavailable`) raise.

        ``on_spawn`` gets the worker's identity just before the task is sent (the caller
        records it so crash recovery can kill the worker's group). If it raises, the task is
        not sent and the worker goes back to the pool. What it returns (the caller storing
        the run's start) is not waited for: the task is sent at once, and only if that fails
        while the task runs is the worker killed and the failure raised, as cancellation
        kills it.
        """
        fleet = self._fleet
        if not fleet.started or fleet.closing.done():
            raise Unavailable("worker pool is not running")
        run_id = next(self._ids)
        try:
            frame = encode(run_message(run_id, call))
        except ProtocolError as exc:
            return RunResult(RunOutcome.FAILED, None, None, f"arguments cannot be sent: {exc}")
        try:
            worker = await fleet.acquire()
        except StartFailed as exc:
            if fleet.closing.done():
                return RunResult(RunOutcome.CANCELLED, None, None, CLOSED_REASON)
            return RunResult(RunOutcome.FAILED, None, None, f"worker failed to start: {exc}")
        try:
            started = asyncio.ensure_future(on_spawn(worker.child.identity()))
        except BaseException:
            fleet.release(worker)  # nothing was sent: the worker is as clean as before
            raise
        return await self._run_on(worker, call, run_id, frame, stop, started)

    async def _run_on(
        self,
        worker: Worker,
        call: PythonCall,
        run_id: int,
        frame: bytes,
        stop: asyncio.Future[str] | None,
        started: asyncio.Future[object],
    ) -> RunResult:
        tail = OutputTail(self._settings.output_tail_bytes)
        worker.child.sink = tail
        # Read only when a CPU limit may need it to explain a SIGKILL: /proc reads on every
        # run of a no-op task were a visible share of its cost.
        cpu_before = None if call.limits.cpu_seconds is None else cpu_ms(worker.child.pid)
        deadline = None if call.timeout_ms is None else self._clock.monotonic_ms() + call.timeout_ms
        arrival = worker.expect()
        sending = worker.send(frame)
        run = _Run(run_id, call, arrival, sending, deadline, stop, started, cpu_before)
        try:
            verdict = await self._supervise(worker, run)
        except BaseException:
            if sending is not None:
                await _finish_cancelled(sending)
            await self._fleet.bury(worker)  # cancelled: the task dies with its worker
            raise
        return dataclasses.replace(verdict, output=tail.getvalue(), output_truncated=tail.truncated)

    async def _supervise(self, worker: Worker, run: _Run) -> RunResult:
        """How the run ended (output aside); the worker is back, retiring, or buried."""
        child = worker.child
        closing = self._fleet.closing
        stops = (closing,) if run.stop is None else (closing, done_of(run.stop))
        start_failed = failure_of(run.started)
        watched = (run.arrival, child.exited, worker.broken, start_failed, *stops)
        first = await wait_any(self._clock, run.deadline, *watched)
        # Still sending only if the run ended without reading its task; the send must let go
        # of the socket before a teardown closes it.
        if run.sending is not None:
            run.sending.cancel()
            await asyncio.wait({run.sending})
        if first is run.arrival:
            return await self._answered(worker, run)
        if first is start_failed:
            run.started.result()  # raises its exception; the caller buries the worker
        if first is worker.broken:
            return await self._broke(worker, run)
        if first is child.exited:
            return await self._died(worker, run)
        return await self._take_down(worker, run, first)

    async def _answered(self, worker: Worker, run: _Run) -> RunResult:
        try:
            done = parse_done(worker.take(), run.id)
        except ProtocolError as exc:
            return await self._kill_for_protocol(worker, str(exc))
        worker.child.drain()  # the worker flushed before answering: all of this run's output
        self._after_task(worker, done)
        return result_of(done, run.call.limits)

    async def _broke(self, worker: Worker, run: _Run) -> RunResult:
        """A bad message kills at once; a hang-up is usually a death whose exit is on its way."""
        if worker.hung_up:
            grace = self._clock.monotonic_ms() + EOF_GRACE_MS
            if await wait_until(self._clock, grace, worker.child.exited):
                return await self._died(worker, run)
        return await self._kill_for_protocol(worker, worker.problem)

    async def _died(self, worker: Worker, run: _Run) -> RunResult:
        """The worker ended during the task on its own: a crash, unless a limit explains it."""
        self._counts["replaced"] += 1
        returncode = await self._fleet.bury(worker)
        if returncode >= 0:
            reason = f"worker exited with status {returncode} during the task"
            return RunResult(RunOutcome.CRASH, returncode, None, reason)
        cpu_after, used_ms = worker.child.cpu_ms, None
        if cpu_after is not None and run.cpu_before is not None:
            used_ms = cpu_after - run.cpu_before
        return classify(returncode, limits=run.call.limits, cpu_ms=used_ms)

    async def _take_down(
        self, worker: Worker, run: _Run, first: asyncio.Future[None] | None
    ) -> RunResult:
        """The deadline passed or a stop came: SIGTERM, grace, SIGKILL, as for a command."""
        closing = self._fleet.closing
        if first is None:
            ending, reason = Ending.TIMED_OUT, None
        elif first is closing:
            ending, reason = Ending.STOPPED, CLOSED_REASON
        else:
            assert run.stop is not None, "the only other future watched"
            ending, reason = Ending.STOPPED, run.stop.result()
        if first is not closing:
            self._counts["replaced"] += 1
        await stop_group(worker.child, self._clock, run.call.kill_grace_ms)
        returncode = await self._fleet.bury(worker)
        return classify(
            returncode, ending=ending, timeout_ms=run.call.timeout_ms, stop_reason=reason
        )

    async def _kill_for_protocol(self, worker: Worker, problem: str) -> RunResult:
        self._counts["protocol_errors"] += 1
        self._counts["replaced"] += 1
        log.warning("worker %d broke the protocol: %s; killed", worker.child.pid, problem)
        returncode = await self._fleet.bury(worker)
        return RunResult(
            RunOutcome.CRASH,
            returncode if returncode >= 0 else None,
            -returncode if returncode < 0 else None,
            f"worker broke the protocol: {problem}",
        )

    def _after_task(self, worker: Worker, done: Done) -> None:
        worker.child.sink = OutputTail(0)  # between runs: counted, dropped
        worker.tasks += 1
        why = self._recycle_reason(worker, done)
        if why is None:
            self._fleet.release(worker)
            return
        log.info("recycling worker %d: %s", worker.child.pid, why)
        self._counts["recycled"] += 1
        self._fleet.retire(worker)

    def _recycle_reason(self, worker: Worker, done: Done) -> str | None:
        s = self._settings
        if done.retire:
            return "it asked to retire (MemoryError, or a limit it could not restore)"
        if s.max_tasks_per_worker is not None and worker.tasks >= s.max_tasks_per_worker:
            return f"{worker.tasks} tasks done"
        if s.max_worker_rss_bytes is None:
            return None
        rss = rss_bytes(worker.child.pid)
        if rss is not None and rss > s.max_worker_rss_bytes:
            return f"RSS of {rss} bytes above {s.max_worker_rss_bytes}"
        return None


async def _finish_cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has let go, even if cancelled again meanwhile.

    Only for a caller on its way out with an exception, which it re-raises afterwards.
    """
    task.cancel()
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
