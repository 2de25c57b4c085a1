"""One attempt of a firing, from its payload to its stored verdict.

The runner decides *when* a firing runs (slots, overlap); this module is *what happens* when it
does, the same for command and Python tasks:

1. build the task's environment (allow-list, the task's own, the firing variables last);
2. execute it: a command through :func:`~schedd.workers.command.run_command`, a Python call in
   the :class:`~schedd.workers.pool.WorkerPool`; both hand the process identity crash recovery
   needs to the same ``on_spawn`` as soon as the process is known, which journals it and
   starts committing the run's ``running`` row;
3. judge the outcome with :func:`schedd.policies.after_run`: success, retry with backoff, dead,
   budget exhausted, or quarantine after the firing's second crash (crashes are stored with the
   firing, so a crash, a restart and a crash still count two);
4. store the run's end and the firing's next state in one transaction (with the run's start,
   when the run ended before the start was written), then act on it: arm the retry, or announce
   the quarantine (a warning naming schedule, key and reason, and the ``on_quarantine`` hook).

**Nothing on a run's path waits for the disk.** The write-ahead record is the firing's
``committed`` row (DESIGN §2), durable before the firing is handed to the runner, in group
commits of up to hundreds. A run's own rows are written *beside* it: its ``running`` row commits
while the task already runs (a command has been running since its spawn anyway), and its end
commits after :meth:`Attempts.run` has returned and the slot is free, ordered after the start by
the single writer; or with the start, when the run ended before the writer reached the start
(:class:`_Rows`), as most short Python calls do: two statements and one write instead of four
and two. Waiting for either put a COMMIT and two thread hops on every run's path: with
two slots the start alone held the end-to-end rate at two thirds of what it is without (and the
end at half, before that). What holds the pool back instead is the store keeping up: a run waits
to start while too many rows are queued behind (:meth:`Store.room_for_run`), so a bulk drain
cannot bury a critical firing's commit under run rows. A start that cannot be stored while the
task still runs (an operator removed the firing meanwhile, the disk failed) stops the task, as
the executors do for any failing ``on_spawn``. A crash before the start commits is covered by
the spawn journal (:mod:`schedd.spawnlog`: recovery kills the process group) and by recovery,
which re-runs every unfinished firing, ``committed`` or ``running``, with attempt + 1; a crash
before the end commits leaves the firing ``running``, re-run the same way: the at-least-once
suffix DESIGN §2 allows.
Retries and quarantine are announced only once the end is stored. :meth:`Attempts.settle`
waits for these commits at shutdown.

The retry's random draw is injected so tests can assert exact retry times.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from schedd import failpoints
from schedd.clock import Clock
from schedd.events import FiringEvents
from schedd.hooks import Hooks
from schedd.keys import format_instant
from schedd.logs import Event
from schedd.model import CommandTask, FiringState, PythonTask, RunOutcome
from schedd.payload import RunPayload
from schedd.policies import BUDGET_EXHAUSTED, Verdict, after_run
from schedd.ratelimit import Budgets
from schedd.record import record
from schedd.spawnlog import SpawnJournal
from schedd.store.contract import Store
from schedd.store.records import ProcessRef, RunFinish, Ticket
from schedd.workers.command import CommandRequest, run_command
from schedd.workers.environment import build_env
from schedd.workers.limits import LimitedLauncher
from schedd.workers.messages import PythonCall
from schedd.workers.outcome import RunResult
from schedd.workers.pool import WorkerPool
from schedd.workers.procs import ProcessIdentity

log = logging.getLogger("schedd.runner")

T = TypeVar("T")


class RunObserver(Protocol):
    """Who hears of every run's start and end (metrics, overdue detection); must not block."""

    def run_started(self, ticket: Ticket, lateness_ms: int | None) -> None: ...

    def run_finished(
        self, ticket: Ticket, outcome: RunOutcome, state: FiringState, duration_ms: int
    ) -> None: ...


class _Unobserved:
    def run_started(self, ticket: Ticket, lateness_ms: int | None) -> None:
        pass

    def run_finished(
        self, ticket: Ticket, outcome: RunOutcome, state: FiringState, duration_ms: int
    ) -> None:
        pass


class Attempts:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        events: FiringEvents,
        *,
        pool: WorkerPool,
        launcher: LimitedLauncher,
        hooks: Hooks,
        budgets: Budgets,
        inherited_env: Mapping[str, str],
        env_allow: Sequence[str],
        output_tail_bytes: int,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._pool = pool
        self._launcher = launcher
        self._hooks = hooks
        self._budgets = budgets
        self._inherited = dict(inherited_env)
        self._allow = tuple(env_allow)
        self._tail = output_tail_bytes
        #: Told ``(firing_id, retry_at_ms)`` of each scheduled retry (the dispatcher arms it;
        #: set after construction, as the dispatcher itself needs the runner built on this).
        self.on_retry: Callable[[int, int], None] = lambda firing_id, retry_at_ms: None
        #: Set by the daemon (metrics, overdue); tests leave it silent.
        self.observer: RunObserver = _Unobserved()
        #: Set by the daemon: spawns recorded before their run row exists (crash safety).
        self.journal: SpawnJournal | None = None
        self._rand = rand
        #: Runs' start and end rows being committed beside the runs (see the module).
        self._recording: set[asyncio.Task[object]] = set()
        self.started = 0
        self.finished = 0

    async def run(
        self, ticket: Ticket, payload: RunPayload, stop: asyncio.Future[str] | None
    ) -> RunOutcome:
        """Run the attempt; its outcome once the task has ended (its rows are stored behind)."""
        firing_vars = {
            "SCHEDD_IDEMPOTENCY_KEY": ticket.key,
            "SCHEDD_SCHEDULED_FOR": format_instant(ticket.scheduled_for_ms),
            "SCHEDD_ATTEMPT": str(ticket.attempt),
            "SCHEDD_SCHEDULE": ticket.schedule,
        }
        rows = _Rows()
        start: asyncio.Task[int] | None = None

        def on_spawn(ident: ProcessIdentity) -> asyncio.Task[int]:
            nonlocal start
            # Synchronous, before the run's first await: a crash from here on leaves a record
            # recovery can act on.
            if self.journal is not None:
                self.journal.spawned(ident)
            now = self._clock.wall_ms()
            start = self._behind(self._start(ticket, ident, now, rows), "start")
            # Lateness is the scheduler's own: a first attempt against its occurrence. A retry's
            # start is decided by its backoff, not by how punctual the scheduler was.
            self.observer.run_started(
                ticket, now - ticket.scheduled_for_ms if ticket.attempt == 1 else None
            )
            log.info(
                "run started: schedule=%s key=%s attempt=%d pid=%d",
                ticket.schedule,
                ticket.key,
                ticket.attempt,
                ident.pid,
                extra=_event(ticket, pid=ident.pid),
            )
            return start

        await self._store.room_for_run()
        started = self._clock.monotonic_ms()
        result = await self._execute(payload, firing_vars, on_spawn, stop)
        await failpoints.hit("after_run_before_result")
        if start is None:  # it never started (spawn failed): record the attempt anyway
            start = self._behind(self._start(ticket, None, self._clock.wall_ms(), rows), "start")
        verdict = self._judge(ticket, payload, result)
        end = _End(ticket, payload, result, verdict, self._clock.wall_ms(), firing_vars)
        if rows.written:
            self._behind(self._record(start, end), "end")
        else:
            rows.end = end  # stored with the start, which announces it
        duration = self._clock.monotonic_ms() - started
        self.observer.run_finished(ticket, result.outcome, verdict.state, duration)
        log.log(
            logging.INFO if result.outcome is RunOutcome.SUCCEEDED else logging.WARNING,
            "run finished: schedule=%s key=%s attempt=%d outcome=%s duration_ms=%d%s",
            ticket.schedule,
            ticket.key,
            ticket.attempt,
            result.outcome.value,
            duration,
            f" reason={result.reason!r}" if result.reason else "",
            extra=_event(
                ticket,
                outcome=result.outcome.value,
                duration_ms=duration,
                reason=result.reason,
            ),
        )
        return result.outcome

    async def settle(self) -> None:
        """Wait until every run's start and end rows are committed (shutdown, before the store
        closes)."""
        while self._recording:
            await asyncio.wait(set(self._recording))

    def _behind(self, write: Coroutine[object, object, T], what: str) -> asyncio.Task[T]:
        """Commit a run's row beside the run, tracked until done so :meth:`settle` waits."""
        task = asyncio.create_task(write, name=f"schedd-run-{what}")
        self._recording.add(task)
        task.add_done_callback(self._recorded)
        return task

    def _recorded(self, task: asyncio.Task[Any]) -> None:
        self._recording.discard(task)
        if task.cancelled():
            return
        # Logged here only: a failed start also reaches the executor, which stops the task and
        # raises it, but not the end waiting for it, which then stores nothing.
        if (exc := task.exception()) is not None:
            log.error("storing a run failed: %s", exc, exc_info=exc)

    async def _start(
        self, ticket: Ticket, ident: ProcessIdentity | None, now_ms: int, rows: _Rows
    ) -> int:
        """Commit the run's ``running`` row, or the whole run if it ended before its start was
        written (then announce its end too); the run's id."""
        ref = None if ident is None else ProcessRef(ident.pid, ident.pgid, ident.start_ticks)
        if ident is not None:
            await failpoints.hit("after_spawn_before_running_row")
        run_id = await self._store.start_run(ticket, ref, now_ms, rows.written_now)
        if ident is not None:
            if self.journal is not None:
                self.journal.recorded(ident)
            self.started += 1
        if rows.end is None:
            self._events.changed(ticket.key, ticket.schedule)
        else:
            self._stored(rows.end)
        return run_id

    async def _execute(
        self,
        payload: RunPayload,
        firing_vars: dict[str, str],
        on_spawn: Callable[[ProcessIdentity], Awaitable[object]],
        stop: asyncio.Future[str] | None,
    ) -> RunResult:
        task, policies = payload.task, payload.policies
        if isinstance(task, PythonTask):
            call = PythonCall(
                target=task.target,
                args=task.args,
                kwargs=task.kwargs,
                context={
                    "idempotency_key": firing_vars["SCHEDD_IDEMPOTENCY_KEY"],
                    "scheduled_for": firing_vars["SCHEDD_SCHEDULED_FOR"],
                    "attempt": int(firing_vars["SCHEDD_ATTEMPT"]),
                    "schedule": firing_vars["SCHEDD_SCHEDULE"],
                },
                env=firing_vars,
                timeout_ms=policies.timeout_ms,
                kill_grace_ms=policies.kill_grace_ms,
                limits=policies.limits,
            )
            return await self._pool.run(call, on_spawn=on_spawn, stop=stop)
        assert isinstance(task, CommandTask)
        env = build_env(
            inherited=self._inherited, allow=self._allow, task_env=task.env, firing=firing_vars
        )
        request = CommandRequest(
            argv=task.argv,
            cwd=task.cwd,
            env=env,
            shell=task.shell,
            timeout_ms=policies.timeout_ms,
            kill_grace_ms=policies.kill_grace_ms,
            output_tail_bytes=self._tail,
            limits=policies.limits,
        )
        return await run_command(
            request, self._clock, on_spawn=on_spawn, launcher=self._launcher, stop=stop
        )

    def _judge(self, ticket: Ticket, payload: RunPayload, result: RunResult) -> Verdict:
        """The firing's next state (nothing is stored yet; a retry takes from the budget)."""
        return after_run(
            result.outcome,
            attempt=ticket.attempt,
            crashes=ticket.crashes + int(result.outcome is RunOutcome.CRASH),
            retry=payload.policies.retry,
            now_ms=self._clock.wall_ms(),
            take_budget=lambda: self._budgets.take(payload.tenant, self._clock.monotonic_ms()),
            rand=self._rand,
        )

    async def _record(self, start: asyncio.Task[int], end: _End) -> None:
        """Store the run's end and its firing's next state once its start is stored; then
        announce retries and quarantine, which must not happen for an end never stored."""
        await asyncio.wait({start})
        if start.cancelled() or start.exception() is not None:
            return  # no run row to finish; the start's failure is logged where it is tracked
        await self._store.finish_run(start.result(), end.finish())
        self._stored(end)

    def _stored(self, end: _End) -> None:
        """The run's end is stored: count it, and announce a retry or a quarantine."""
        self.finished += 1
        ticket, verdict = end.ticket, end.verdict
        self._events.changed(ticket.key, ticket.schedule)
        if verdict.state is FiringState.FAILED:
            assert verdict.retry_at_ms is not None
            log.info(
                "retry scheduled: schedule=%s key=%s attempt=%d at=%s",
                ticket.schedule,
                ticket.key,
                ticket.attempt + 1,
                format_instant(verdict.retry_at_ms),
                extra=_event(ticket, outcome="retry_scheduled"),
            )
            self.on_retry(ticket.firing_id, verdict.retry_at_ms)
        elif verdict.state is FiringState.QUARANTINED:
            reason = end.firing_reason or "quarantined"
            log.warning(
                "quarantined: schedule=%s key=%s reason=%r (schedctl dlq show %d)",
                ticket.schedule,
                ticket.key,
                reason,
                ticket.firing_id,
                extra=_event(ticket, outcome="quarantined", reason=reason),
            )
            hook = end.payload.policies.on_quarantine
            if hook:
                self._hooks.quarantined(
                    hook, end.firing_vars, firing_id=ticket.firing_id, reason=reason
                )


class _Rows:
    """How a run's rows are being written. Its start is queued behind at the spawn; if the run
    ends before the store writes it (most short Python runs do), the end rides along in the
    same row instead of following in a write of its own (see ``Store.start_run``)."""

    __slots__ = ("end", "written")

    def __init__(self) -> None:
        self.end: _End | None = None
        self.written = False

    def written_now(self) -> RunFinish | None:
        """Asked by the store as it writes the start: the end to write with it, if known."""
        self.written = True
        return None if self.end is None else self.end.finish()


@record
class _End:
    """An ended run as judged, waiting to be stored: with its start, or after it."""

    ticket: Ticket
    payload: RunPayload
    result: RunResult
    verdict: Verdict
    ended_ms: int
    firing_vars: dict[str, str]

    @property
    def firing_reason(self) -> str | None:
        reason = self.verdict.reason
        # ``retry_budget_exhausted`` stays bare: scripts match on it; the run has its reason.
        if reason not in (None, BUDGET_EXHAUSTED) and self.result.reason:
            return f"{reason}; last: {self.result.reason}"
        return reason

    def finish(self) -> RunFinish:
        result, verdict = self.result, self.verdict
        return RunFinish(
            firing_id=self.ticket.firing_id,
            outcome=result.outcome.value,
            firing_state=verdict.state,
            ended_ms=self.ended_ms,
            exit_code=result.exit_code,
            signal=result.signal,
            reason=result.reason,
            output=result.output,
            output_bytes=len(result.output),
            output_truncated=result.output_truncated,
            crashed=result.outcome is RunOutcome.CRASH,
            retry_at_ms=verdict.retry_at_ms,
            firing_reason=self.firing_reason,
        )


def _event(
    ticket: Ticket,
    *,
    pid: int | None = None,
    outcome: str | None = None,
    duration_ms: int | None = None,
    reason: str | None = None,
) -> Event:
    """A run log line's structured fields (``[logging] format = "json"`` lifts them out)."""
    event = Event(
        schedule=ticket.schedule, key=ticket.key, firing=ticket.firing_id, attempt=ticket.attempt
    )
    if pid is not None:
        event["pid"] = pid
    if outcome is not None:
        event["outcome"] = outcome
    if duration_ms is not None:
        event["duration_ms"] = duration_ms
    if reason is not None:
        event["reason"] = reason
    return event
