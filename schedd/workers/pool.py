"""A pool of persistent Python worker processes, supervised as distrusted children.

Python tasks run in long-lived workers (``pyworker.py`` under the application's interpreter),
so their imports stay warm between runs (DESIGN §6). Each worker is a process started by
:mod:`schedd.workers.spawn`: its own session and process group, a pidfd for its exit, its
stdout+stderr on one pipe. A Unix socketpair carries the length-framed JSON protocol described
in :mod:`schedd.workers.pyworker`. The model is anyio's ``to_process``, with the daemon's extra
duties: timeouts, limits, output capture, recycling.

**A worker's life**::

    launch ─► STARTING ─READY─► IDLE ◄──────────── done (and neither old nor fat)
                 │               │ run                  ▲
                 │ no READY      ▼                      │
                 │ in time   BUSY ── done ──────────────┘
                 ▼               │ timeout / stop / death / protocol violation
              buried ◄───────────┴──── LEAVING ◄── recycle (N tasks, RSS, MemoryError), idle
                                                   shrink, close: hang up, grace, SIGKILL

* **Handshake before work.** A worker is given a task only after its ``ready`` message, which
  must come within ``start_timeout_ms``; otherwise it is killed, and the run that needed it ends
  ``FAILED`` with ``worker failed to start: ...`` (with the worker's own output, e.g. a
  traceback from a broken interpreter), not with an exception.
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
* **Replacement and recycling.** A worker that died or was killed is reaped, forgotten and, if
  the pool fell below ``min_workers``, replaced in the background. After ``done``, a worker is
  retired (its channel closed, which tells it to exit; SIGKILL after ``retire_grace_ms``) once it
  has run ``max_tasks_per_worker`` tasks, once its RSS (``/proc/<pid>/statm``) exceeds
  ``max_worker_rss_bytes``, or when it asks to (after a ``MemoryError``, or when it could not
  restore a lowered hard rlimit). Whatever is left of its group is SIGKILLed when it goes.
* **Scaling.** ``run`` takes the most recently used idle worker (its caches are warmest, and the
  others age towards the idle shrink), launches one if the pool is below ``max_workers``, or
  waits in line. ``prescale`` launches workers ahead of a known pulse without blocking. Workers
  above ``min_workers`` idle for ``idle_timeout_ms`` are retired by one loop that sleeps on the
  injected clock until the next such deadline or until the pool changes: no polling.
* **Shutdown.** ``close`` retires idle workers, stops starting ones and takes busy ones down like
  a stop (their runs end ``CANCELLED``), and returns once every worker process is reaped. The
  runner is expected to have cancelled its runs first (that kills their workers at once).

Known limits: a task's background process that outlives the task keeps running inside the
worker's group until the worker is retired or dies; a process that escaped the group with
``setsid`` survives even that (as for command tasks). ``stop`` is honoured once a worker is
running the task, not while the run waits for a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import signal
import socket
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from schedd.cli.pyz import worker_program
from schedd.clock import Clock
from schedd.errors import InvalidArgument, Unavailable
from schedd.model import RunOutcome
from schedd.workers import pyworker
from schedd.workers.messages import (
    Done,
    PythonCall,
    how_it_ended,
    parse_done,
    parse_ready,
    result_of,
    run_message,
)
from schedd.workers.outcome import Ending, RunResult, classify, duration
from schedd.workers.output import OutputTail
from schedd.workers.procs import ProcessIdentity, cpu_ms, rss_bytes
from schedd.workers.pyworker import ProtocolError, encode
from schedd.workers.spawn import (
    DRAIN_MS,
    Child,
    done_of,
    failure_of,
    kill_and_reap,
    stop_group,
    wait_any,
    wait_until,
)
from schedd.workers.worker import Worker, WorkerState

log = logging.getLogger("schedd.workers")

_T = TypeVar("_T")

#: The worker program, by absolute path: the application's interpreter cannot import schedd.
PYWORKER = str(Path(pyworker.__file__).resolve())
#: How long a worker that closed its control channel gets to exit before it is killed.
EOF_GRACE_MS = 1_000
#: How much of a failed worker's start-up output goes into the failure reason.
STARTUP_OUTPUT_BYTES = 2_000
#: Reason of runs cut short because the pool is closing.
CLOSED_REASON = "worker pool closed"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    #: The application's interpreter (a virtualenv's ``bin/python``); it needs no schedd.
    python: str
    #: Prepended to the workers' imports as ``PYTHONPATH`` (replacing one in ``env``).
    pythonpath: tuple[str, ...]
    #: The workers' whole environment (the runs' ``SCHEDD_*`` variables are set per run).
    env: Mapping[str, str]
    cwd: str | None
    min_workers: int
    max_workers: int
    max_tasks_per_worker: int | None
    max_worker_rss_bytes: int | None
    start_timeout_ms: int
    idle_timeout_ms: int
    output_tail_bytes: int
    #: Between closing a retiring worker's channel and SIGKILL.
    retire_grace_ms: int = 5_000

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise InvalidArgument(
                f"workers need 0 <= min <= max and max >= 1, got min={self.min_workers} "
                f"max={self.max_workers}"
            )
        for name in ("max_tasks_per_worker", "max_worker_rss_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidArgument(f"{name} must be >= 1 or unset, got {value}")
        for name in ("start_timeout_ms", "idle_timeout_ms"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("output_tail_bytes", "retire_grace_ms"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class PoolStats:
    #: Workers starting, idle or busy (not those on their way out).
    size: int
    idle: int
    busy: int
    starting: int
    #: Processes ever launched.
    spawned: int
    #: Retired after N tasks, above the RSS limit, or at their own request.
    recycled: int
    #: Retired after idling above ``min_workers``.
    shrunk: int
    #: Lost to a crash, a kill (timeout, stop, protocol) or an exit, and so replaced.
    replaced: int
    failed_starts: int
    protocol_errors: int
    #: Pids of the workers counted in ``size``.
    pids: tuple[int, ...]


class _StartFailed(Exception):
    """A worker could not be started (or the pool closed while one was needed)."""


@dataclass(frozen=True, slots=True)
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
        self._env = dict(settings.env)
        if settings.pythonpath:
            self._env["PYTHONPATH"] = os.pathsep.join(settings.pythonpath)
        #: Every worker whose process is not reaped yet, leaving ones included.
        self._workers: set[Worker] = set()
        #: Idle workers, least recently used first.
        self._idle: list[Worker] = []
        #: Runs waiting for a worker: given one, or ``None`` (capacity freed: look again).
        self._waiters: deque[asyncio.Future[Worker | None]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Resolved when the idle set or the size changes: wakes the shrink loop.
        self._changed: asyncio.Future[None] | None = None
        self._none_left = asyncio.Event()
        self._none_left.set()
        self._ids = itertools.count(1)
        self._counts: Counter[str] = Counter()
        self._started = False
        self._closing: asyncio.Future[None]
        self._shrinker: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch ``min_workers`` and wait for their READY.

        Raises :class:`~schedd.errors.Unavailable` (with the pool closed again) if any fails:
        a pool whose interpreter cannot start is a configuration error worth stopping for.
        """
        if self._started:
            return
        self._started = True
        self._closing = asyncio.get_running_loop().create_future()
        self._shrinker = self._background(self._shrink_loop())
        launched: list[Worker] = []
        failures: list[BaseException] = []
        for _ in range(self._settings.min_workers):
            try:
                launched.append(self._launch())
            except _StartFailed as exc:
                failures.append(exc)
                break
        ready = await asyncio.gather(*map(self._await_ready, launched), return_exceptions=True)
        failures += [r for r in ready if isinstance(r, BaseException)]
        for worker in ready:
            if isinstance(worker, Worker):
                self._release(worker)
        if failures:
            await self.close()
            if isinstance(failures[0], _StartFailed):
                raise Unavailable(f"worker failed to start: {failures[0]}")
            raise failures[0]

    async def close(self) -> None:
        """Retire or kill every worker and return once all are reaped (idempotent)."""
        if not self._started:
            return
        if not self._closing.done():
            self._closing.set_result(None)
            if self._shrinker is not None:
                self._shrinker.cancel()
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
            for worker in list(self._idle):
                self._retire(worker)
        # Starting workers see the closing future and bury themselves; busy runs stop theirs.
        await self._none_left.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        """Launch workers towards ``min(max_workers, wanted)`` in the background.

        Returns at once; the future (which may be ignored) resolves when those workers are
        ready or have failed to start (failures are logged and counted, not raised).
        """
        launches: list[asyncio.Task[None]] = []
        if self._started and not self._closing.done():
            for _ in range(min(self._settings.max_workers, wanted) - self._size()):
                launch = self._launch_spare()
                if launch is None:
                    break
                launches.append(launch)
        return asyncio.gather(*launches)

    def stats(self) -> PoolStats:
        states = Counter(w.state for w in self._workers)
        counted = [w for w in self._workers if w.state is not WorkerState.LEAVING]
        return PoolStats(
            size=len(counted),
            idle=states[WorkerState.IDLE],
            busy=states[WorkerState.BUSY],
            starting=states[WorkerState.STARTING],
            spawned=self._counts["spawned"],
            recycled=self._counts["recycled"],
            shrunk=self._counts["shrunk"],
            replaced=self._counts["replaced"],
            failed_starts=self._counts["failed_starts"],
            protocol_errors=self._counts["protocol_errors"],
            pids=tuple(sorted(w.child.pid for w in counted)),
        )

    # --- a run ----------------------------------------------------------------------------

    async def run(
        self,
        call: PythonCall,
        *,
        on_spawn: Callable[[ProcessIdentity], Awaitable[object]],
        stop: asyncio.Future[str] | None = None,
    ) -> RunResult:
        """Run ``call`` in a worker to its result; only cancellation or ``on_spawn`` raise.

        ``on_spawn`` gets the worker's identity just before the task is sent (the caller
        records it so crash recovery can kill the worker's group). If it raises, the task is
        not sent and the worker goes back to the pool. What it returns (the caller storing
        the run's start) is not waited for: the task is sent at once, and only if that fails
        while the task runs is the worker killed and the failure raised, as cancellation
        kills it.
        """
        if not self._started or self._closing.done():
            raise Unavailable("worker pool is not running")
        run_id = next(self._ids)
        try:
            frame = encode(run_message(run_id, call))
        except ProtocolError as exc:
            return RunResult(RunOutcome.FAILED, None, None, f"arguments cannot be sent: {exc}")
        try:
            worker = await self._acquire()
        except _StartFailed as exc:
            if self._closing.done():
                return RunResult(RunOutcome.CANCELLED, None, None, CLOSED_REASON)
            return RunResult(RunOutcome.FAILED, None, None, f"worker failed to start: {exc}")
        try:
            started = asyncio.ensure_future(on_spawn(worker.child.identity()))
        except BaseException:
            self._release(worker)  # nothing was sent: the worker is as clean as before
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
            await self._bury(worker)  # cancelled: the task dies with its worker
            raise
        return dataclasses.replace(verdict, output=tail.getvalue(), output_truncated=tail.truncated)

    async def _supervise(self, worker: Worker, run: _Run) -> RunResult:
        """How the run ended (output aside); the worker is back, retiring, or buried."""
        child = worker.child
        stops = (self._closing,) if run.stop is None else (self._closing, done_of(run.stop))
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
        returncode = await self._bury(worker)
        if returncode >= 0:
            reason = f"worker exited with status {returncode} during the task"
            return RunResult(RunOutcome.CRASH, returncode, None, reason)
        cpu_after, cpu_ms = worker.child.cpu_ms, None
        if cpu_after is not None and run.cpu_before is not None:
            cpu_ms = cpu_after - run.cpu_before
        return classify(returncode, limits=run.call.limits, cpu_ms=cpu_ms)

    async def _take_down(
        self, worker: Worker, run: _Run, first: asyncio.Future[None] | None
    ) -> RunResult:
        """The deadline passed or a stop came: SIGTERM, grace, SIGKILL, as for a command."""
        if first is None:
            ending, reason = Ending.TIMED_OUT, None
        elif first is self._closing:
            ending, reason = Ending.STOPPED, CLOSED_REASON
        else:
            assert run.stop is not None, "the only other future watched"
            ending, reason = Ending.STOPPED, run.stop.result()
        if first is not self._closing:
            self._counts["replaced"] += 1
        await stop_group(worker.child, self._clock, run.call.kill_grace_ms)
        returncode = await self._bury(worker)
        return classify(
            returncode, ending=ending, timeout_ms=run.call.timeout_ms, stop_reason=reason
        )

    async def _kill_for_protocol(self, worker: Worker, problem: str) -> RunResult:
        self._counts["protocol_errors"] += 1
        self._counts["replaced"] += 1
        log.warning("worker %d broke the protocol: %s; killed", worker.child.pid, problem)
        returncode = await self._bury(worker)
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
            self._release(worker)
            return
        log.info("recycling worker %d: %s", worker.child.pid, why)
        self._counts["recycled"] += 1
        self._retire(worker)

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

    # --- getting a worker -----------------------------------------------------------------

    async def _acquire(self) -> Worker:
        """An idle worker, a new one, or the next one freed; :class:`_StartFailed` if none."""
        while True:
            if self._closing.done():
                raise _StartFailed(CLOSED_REASON)
            worker = self._pop_idle()
            if worker is not None:
                return worker
            # Spares still starting are for the runs already waiting, and then for us.
            if self._size() < self._settings.max_workers and self._spares() <= len(self._waiters):
                worker = await self._await_ready(self._launch())
                worker.state = WorkerState.BUSY
                return worker
            worker = await self._wait_for_worker()
            if worker is not None:
                return worker

    async def _wait_for_worker(self) -> Worker | None:
        waiter: asyncio.Future[Worker | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            elif (handed := waiter.result()) is not None:
                self._release(handed)  # given to us as we were cancelled: pass it on
            else:
                self._wake_one()
            raise

    def _pop_idle(self) -> Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.healthy:
                # No _notify: taking the newest idle worker never brings the shrink earlier.
                worker.state = WorkerState.BUSY
                return worker
            self._lose(worker)
        return None

    def _release(self, worker: Worker) -> None:
        """A ready worker without a task: to the first waiting run, else idle."""
        if self._closing.done():
            self._retire(worker)
            return
        # Asked only when handed straight on: a worker going idle is asked when taken (a
        # ``waitid`` each time, twice a run when both asked).
        if self._waiters and not worker.healthy:
            self._lose(worker)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                worker.state = WorkerState.BUSY
                waiter.set_result(worker)
                return
        before = self._shrink_deadline()
        worker.state = WorkerState.IDLE
        worker.idle_since = self._clock.monotonic_ms()
        self._idle.append(worker)
        # Woken only when the shrink comes due sooner: every run's worker going idle woke it
        # twice a run (taken and given back) for nothing.
        if self._shrink_deadline() != before:
            self._notify()

    def _wake_one(self) -> None:
        """Capacity was freed: let the first waiting run look again (it may launch)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _size(self) -> int:
        return sum(1 for w in self._workers if w.state is not WorkerState.LEAVING)

    def _spares(self) -> int:
        return sum(1 for w in self._workers if w.state is WorkerState.STARTING and w.spare)

    # --- starting ---------------------------------------------------------------------------

    def _launch(self) -> Worker:
        """Start a worker process (synchronously, so it is counted at once)."""
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
            raise _StartFailed(f"cannot run {python!r}: {exc}") from None
        finally:
            theirs.close()
        self._counts["spawned"] += 1
        startup = OutputTail(STARTUP_OUTPUT_BYTES)
        child.sink = startup
        worker = Worker(child, ours, startup)
        trouble = functools.partial(self._on_trouble, worker)
        child.exited.add_done_callback(trouble)
        worker.broken.add_done_callback(trouble)
        self._workers.add(worker)
        self._none_left.clear()
        self._notify()  # above min_workers now: the oldest idle worker may be due to retire
        return worker

    async def _await_ready(self, worker: Worker) -> Worker:
        """The worker once it said READY; otherwise it is buried and :class:`_StartFailed`."""
        try:
            problem = await self._handshake(worker)
        except BaseException:
            await self._bury(worker)
            raise
        if problem is None:
            worker.was_ready = True
            worker.child.sink = OutputTail(0)
            return worker
        self._counts["failed_starts"] += 1
        returncode = await self._bury(worker)
        output = worker.startup_output.getvalue().decode("utf-8", "replace").strip()
        message = f"{problem} ({how_it_ended(returncode)})"
        raise _StartFailed(f"{message}; output: {output}" if output else message)

    async def _handshake(self, worker: Worker) -> str | None:
        """Why the worker is not ready, or ``None`` once its READY came."""
        timeout = self._settings.start_timeout_ms
        deadline = self._clock.monotonic_ms() + timeout
        child = worker.child
        first = await wait_any(
            self._clock, deadline, worker.ready, child.exited, worker.broken, self._closing
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
        if first is self._closing:
            return CLOSED_REASON
        if first is worker.broken and not worker.hung_up:
            self._counts["protocol_errors"] += 1
            return f"broke the protocol: {worker.problem}"
        return "exited before READY"

    def _launch_spare(self) -> asyncio.Task[None] | None:
        """Launch a worker for no run in particular; it joins the pool once ready.

        Launched at once, not in the task, so that it counts towards the size immediately.
        """
        try:
            worker = self._launch()
        except _StartFailed as exc:
            log.warning("worker failed to start: %s", exc)
            return None
        worker.spare = True
        return self._background(self._spare_ready(worker))

    async def _spare_ready(self, worker: Worker) -> None:
        try:
            await self._await_ready(worker)
        except _StartFailed as exc:
            log.warning("worker failed to start: %s", exc)
            self._wake_one()  # a run waiting for this spare must look again
            return
        self._release(worker)

    # --- leaving ----------------------------------------------------------------------------

    def _on_trouble(self, worker: Worker, _: asyncio.Future[None]) -> None:
        """An exit or a broken channel; only idle workers are nobody else's business."""
        if worker.state is WorkerState.IDLE:
            self._lose(worker)

    def _lose(self, worker: Worker) -> None:
        """An idle worker died or misbehaved: kill and reap it in the background."""
        self._leave(worker)
        self._counts["replaced"] += 1
        if worker.broken.done() and not worker.hung_up:
            self._counts["protocol_errors"] += 1
            log.warning("idle worker %d broke the protocol: %s", worker.child.pid, worker.problem)
        else:
            log.warning("idle worker %d lost: %s", worker.child.pid, worker.problem or "exited")
        self._background(self._bury(worker))

    def _retire(self, worker: Worker) -> None:
        self._leave(worker)
        self._background(self._retire_gracefully(worker))

    def _leave(self, worker: Worker) -> None:
        worker.state = WorkerState.LEAVING
        if worker in self._idle:
            self._idle.remove(worker)
        self._notify()

    async def _retire_gracefully(self, worker: Worker) -> None:
        worker.hang_up()
        deadline = self._clock.monotonic_ms() + self._settings.retire_grace_ms
        if not await wait_until(self._clock, deadline, worker.child.exited):
            log.warning("worker %d did not exit when retired; killed", worker.child.pid)
        await self._bury(worker)

    async def _bury(self, worker: Worker) -> int:
        """SIGKILL whatever is left of the worker's group, reap it, forget it: its code.

        The last word on every worker. The group id stays pinned by the unreaped leader until
        the SIGKILL went out, so the signal cannot reach a stranger.
        """
        if worker.returncode is not None:  # a cancelled teardown already finished the job
            return worker.returncode
        self._leave(worker)
        worker.hang_up()
        child = worker.child
        child.signal(signal.SIGKILL)
        try:
            await wait_until(self._clock, None, child.exited)
            await wait_until(self._clock, self._clock.monotonic_ms() + DRAIN_MS, child.eof)
            child.drain()
        finally:
            worker.returncode = await kill_and_reap(child)
            self._forget(worker)
        return worker.returncode

    def _forget(self, worker: Worker) -> None:
        self._workers.discard(worker)
        if not self._workers:
            self._none_left.set()
        self._wake_one()
        if worker.was_ready and not self._closing.done():
            for _ in range(self._settings.min_workers - self._size()):
                if self._launch_spare() is None:
                    break

    # --- idle shrink ------------------------------------------------------------------------

    async def _shrink_loop(self) -> None:
        """Retire workers above ``min_workers`` idle for ``idle_timeout_ms``, oldest first."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed = changed = loop.create_future()
            deadline = self._shrink_deadline()
            if deadline is not None and self._clock.monotonic_ms() >= deadline:
                log.info("retiring worker %d: idle", self._idle[0].child.pid)
                self._counts["shrunk"] += 1
                self._retire(self._idle[0])
            else:
                await wait_any(self._clock, deadline, changed)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _shrink_deadline(self) -> int | None:
        if not self._idle or self._size() <= self._settings.min_workers:
            return None
        return self._idle[0].idle_since + self._settings.idle_timeout_ms

    def _background(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker pool task failed", exc_info=task.exception())


async def _finish_cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has let go, even if cancelled again meanwhile.

    Only for a caller on its way out with an exception, which it re-raises afterwards.
    """
    task.cancel()
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
