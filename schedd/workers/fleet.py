"""The worker pool's fleet: which workers exist, which are free, and how they come and go.

Split from :mod:`schedd.workers.pool` so that the pool's bookkeeping (launching, handing out and
taking back workers, the runs waiting for one, retiring, burying, the idle shrink, the counts)
is one class, and the :class:`~schedd.workers.pool.WorkerPool` holds only what happens to a run
on a worker it was given. Starting a process and its handshake are the
:class:`~schedd.workers.launch.Launcher`'s.

**A worker's life**::

    launch ─► STARTING ─READY─► IDLE ◄──────────── done (and neither old nor fat)
                 │               │ run                  ▲
                 │ no READY      ▼                      │
                 │ in time   BUSY ── done ──────────────┘
                 ▼               │ timeout / stop / death / protocol violation
              buried ◄───────────┴──── LEAVING ◄── recycle (N tasks, RSS, MemoryError), idle
                                                   shrink, close: hang up, grace, SIGKILL

* **Replacement.** A worker that died or was killed is reaped, forgotten and, if the pool fell
  below ``min_workers``, replaced in the background. Whatever is left of a leaving worker's
  group is SIGKILLed when it goes.
* **Scaling.** ``run`` takes the most recently used idle worker (its caches are warmest, and the
  others age towards the idle shrink), launches one if the pool is below ``max_workers``, or
  waits in line. ``prescale`` launches workers ahead of a known pulse without blocking. Workers
  above ``min_workers`` idle for ``idle_timeout_ms`` are retired by one loop that sleeps on the
  injected clock until the next such deadline: no polling. It is woken only when a change
  brings the next shrink *sooner* than it sleeps for. One that puts it later (a worker given
  back to an empty pool, as after every run of a busy pool) waits for the loop to wake at the
  old deadline and look again: waking it cost a future, a turn of the loop and a wait each run.
* **Shutdown.** ``close`` retires idle workers, stops starting ones and takes busy ones down like
  a stop (their runs end ``CANCELLED``), and returns once every worker process is reaped. The
  runner is expected to have cancelled its runs first (that kills their workers at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any, TypeVar

from schedd.clock import Clock
from schedd.errors import Unavailable
from schedd.workers.launch import CLOSED_REASON, Launcher, StartFailed, start_failure
from schedd.workers.output import OutputTail
from schedd.workers.pooldata import PoolSettings, PoolStats
from schedd.workers.spawn import DRAIN_MS, kill_and_reap, wait_any, wait_until
from schedd.workers.worker import Worker, WorkerState

log = logging.getLogger("schedd.workers")

_T = TypeVar("_T")


class Fleet:
    """The pool's workers, from launch to burial; see the module docstring."""

    def __init__(self, settings: PoolSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        #: What :meth:`stats` reports; the runs count into it too.
        self.counts: Counter[str] = Counter()
        self._launcher = Launcher(settings, clock, self.counts)
        #: Every worker whose process is not reaped yet, leaving ones included.
        self._workers: set[Worker] = set()
        #: Idle workers, least recently used first.
        self._idle: list[Worker] = []
        #: Runs waiting for a worker: given one, or ``None`` (capacity freed: look again).
        self._waiters: deque[asyncio.Future[Worker | None]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Resolved when the next shrink may come due sooner than the loop sleeps for.
        self._changed: asyncio.Future[None] | None = None
        #: The deadline the shrink loop sleeps until (``None``: until it is woken).
        self._shrink_at: int | None = None
        self._none_left = asyncio.Event()
        self._none_left.set()
        self.started = False
        #: Resolved by :meth:`close`: runs and starting workers watch it.
        self.closing: asyncio.Future[None]
        self._shrinker: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch ``min_workers`` and wait for their READY.

        Raises :class:`~schedd.errors.Unavailable` (with the pool closed again) if any fails:
        a pool whose interpreter cannot start is a configuration error worth stopping for.
        """
        if self.started:
            return
        self.started = True
        self.closing = asyncio.get_running_loop().create_future()
        self._shrinker = self._background(self._shrink_loop())
        launched: list[Worker] = []
        failures: list[BaseException] = []
        for _ in range(self._settings.min_workers):
            try:
                launched.append(self._launch())
            except StartFailed as exc:
                failures.append(exc)
                break
        ready = await asyncio.gather(*map(self._await_ready, launched), return_exceptions=True)
        failures += [r for r in ready if isinstance(r, BaseException)]
        for worker in ready:
            if isinstance(worker, Worker):
                self.release(worker)
        if failures:
            await self.close()
            if isinstance(failures[0], StartFailed):
                raise Unavailable(f"worker failed to start: {failures[0]}")
            raise failures[0]

    async def close(self) -> None:
        """Retire or kill every worker and return once all are reaped (idempotent)."""
        if not self.started:
            return
        if not self.closing.done():
            self.closing.set_result(None)
            if self._shrinker is not None:
                self._shrinker.cancel()
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
            for worker in list(self._idle):
                self.retire(worker)
        # Starting workers see the closing future and bury themselves; busy runs stop theirs.
        await self._none_left.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def prescale(self, wanted: int) -> asyncio.Future[list[None]]:
        """Launch workers towards ``min(max_workers, wanted)`` in the background.

        Returns at once; the future (which may be ignored) resolves when those workers are
        ready or have failed to start (failures are logged and counted, not raised).
        """
        launches: list[asyncio.Task[None]] = []
        if self.started and not self.closing.done():
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
            spawned=self.counts["spawned"],
            recycled=self.counts["recycled"],
            shrunk=self.counts["shrunk"],
            replaced=self.counts["replaced"],
            failed_starts=self.counts["failed_starts"],
            protocol_errors=self.counts["protocol_errors"],
            pids=tuple(sorted(w.child.pid for w in counted)),
        )

    # --- getting a worker -----------------------------------------------------------------

    async def acquire(self) -> Worker:
        """An idle worker, a new one, or the next one freed; :class:`StartFailed` if none."""
        while True:
            if self.closing.done():
                raise StartFailed(CLOSED_REASON)
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
                self.release(handed)  # given to us as we were cancelled: pass it on
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

    def release(self, worker: Worker) -> None:
        """A ready worker without a task: to the first waiting run, else idle."""
        if self.closing.done():
            self.retire(worker)
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
        worker.state = WorkerState.IDLE
        worker.idle_since = self._clock.monotonic_ms()
        self._idle.append(worker)
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
        worker = self._launcher.spawn()
        trouble = functools.partial(self._on_trouble, worker)
        worker.child.exited.add_done_callback(trouble)
        worker.broken.add_done_callback(trouble)
        self._workers.add(worker)
        self._none_left.clear()
        self._notify()  # above min_workers now: the oldest idle worker may be due to retire
        return worker

    async def _await_ready(self, worker: Worker) -> Worker:
        """The worker once it said READY; otherwise it is buried and :class:`StartFailed`."""
        try:
            problem = await self._launcher.handshake(worker, self.closing)
        except BaseException:
            await self.bury(worker)
            raise
        if problem is None:
            worker.was_ready = True
            worker.child.sink = OutputTail(0)
            return worker
        self.counts["failed_starts"] += 1
        returncode = await self.bury(worker)
        raise start_failure(worker, problem, returncode)

    def _launch_spare(self) -> asyncio.Task[None] | None:
        """Launch a worker for no run in particular; it joins the pool once ready.

        Launched at once, not in the task, so that it counts towards the size immediately.
        """
        try:
            worker = self._launch()
        except StartFailed as exc:
            log.warning("worker failed to start: %s", exc)
            return None
        worker.spare = True
        return self._background(self._spare_ready(worker))

    async def _spare_ready(self, worker: Worker) -> None:
        try:
            await self._await_ready(worker)
        except StartFailed as exc:
            log.warning("worker failed to start: %s", exc)
            self._wake_one()  # a run waiting for this spare must look again
            return
        self.release(worker)

    # --- leaving ----------------------------------------------------------------------------

    def _on_trouble(self, worker: Worker, _: asyncio.Future[None]) -> None:
        """An exit or a broken channel; only idle workers are nobody else's business."""
        if worker.state is WorkerState.IDLE:
            self._lose(worker)

    def _lose(self, worker: Worker) -> None:
        """An idle worker died or misbehaved: kill and reap it in the background."""
        self._leave(worker)
        self.counts["replaced"] += 1
        if worker.broken.done() and not worker.hung_up:
            self.counts["protocol_errors"] += 1
            log.warning("idle worker %d broke the protocol: %s", worker.child.pid, worker.problem)
        else:
            log.warning("idle worker %d lost: %s", worker.child.pid, worker.problem or "exited")
        self._background(self.bury(worker))

    def retire(self, worker: Worker) -> None:
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
        await self.bury(worker)

    async def bury(self, worker: Worker) -> int:
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
        if worker.was_ready and not self.closing.done():
            for _ in range(self._settings.min_workers - self._size()):
                if self._launch_spare() is None:
                    break

    # --- idle shrink ------------------------------------------------------------------------

    async def _shrink_loop(self) -> None:
        """Retire workers above ``min_workers`` idle for ``idle_timeout_ms``, oldest first."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed = changed = loop.create_future()
            deadline = self._shrink_at = self._shrink_deadline()
            if deadline is not None and self._clock.monotonic_ms() >= deadline:
                log.info("retiring worker %d: idle", self._idle[0].child.pid)
                self.counts["shrunk"] += 1
                self.retire(self._idle[0])
            else:
                await wait_any(self._clock, deadline, changed)

    def _notify(self) -> None:
        """The idle set or the size changed: wake the shrink loop if it must act sooner."""
        changed = self._changed
        if changed is None or changed.done():
            return
        deadline = self._shrink_deadline()
        if deadline is not None and (self._shrink_at is None or deadline < self._shrink_at):
            changed.set_result(None)

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
