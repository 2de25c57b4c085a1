"""One attempt of a firing, from its payload to its stored verdict.

The runner decides *when* a firing runs (slots, overlap); this module is *what happens* when it
does, the same for command and Python tasks:

1. build the task's environment (allow-list, the task's own, the firing variables last);
2. execute it: a command through :func:`~schedd.workers.command.run_command`, a Python call in
   the :class:`~schedd.workers.pool.WorkerPool`; both record the run (with the process identity
   crash recovery needs) through the same ``on_spawn`` as soon as the process is known;
3. judge the outcome with :func:`schedd.policies.after_run`: success, retry with backoff, dead,
   budget exhausted, or quarantine after the firing's second crash (crashes are stored with the
   firing, so a crash, a restart and a crash still count two);
4. store the run's end and the firing's next state in one transaction, then act on it: arm the
   retry, or announce the quarantine (a warning naming schedule, key and reason, and the
   ``on_quarantine`` hook).

Step 4 happens *after* :meth:`Attempts.run` returns, so the slot is free while the end commits:
the start is the write-ahead record (a run is never sent to a process before its row is
durable), but nothing waits on the end, and holding the slot for it put a second commit on every
run's path (half the end-to-end rate). A crash before the end commits leaves the firing
``running``, and recovery re-runs it with attempt + 1: the at-least-once suffix DESIGN §2 allows.
Retries and quarantine are announced only once the end is stored. :meth:`Attempts.settle`
waits for these commits at shutdown.

The retry's random draw is injected so tests can assert exact retry times.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

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
from schedd.spawnlog import SpawnJournal
from schedd.store.contract import Store
from schedd.store.records import ProcessRef, RunFinish, Ticket
from schedd.workers.command import CommandRequest, run_command
from schedd.workers.environment import build_env
from schedd.workers.limits import LimitedLauncher
from schedd.workers.outcome import RunResult
from schedd.workers.pool import PythonCall, WorkerPool
from schedd.workers.procs import ProcessIdentity

log = logging.getLogger("schedd.runner")


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
        #: Ended runs whose record is being committed; the slot is already free (see ``run``).
        self._recording: set[asyncio.Task[None]] = set()
        self.started = 0
        self.finished = 0

    async def run(
        self, ticket: Ticket, payload: RunPayload, stop: asyncio.Future[str] | None
    ) -> RunOutcome:
        """Run the attempt; its outcome once the task has ended (its end is stored behind)."""
        firing_vars = {
            "SCHEDD_IDEMPOTENCY_KEY": ticket.key,
            "SCHEDD_SCHEDULED_FOR": format_instant(ticket.scheduled_for_ms),
            "SCHEDD_ATTEMPT": str(ticket.attempt),
            "SCHEDD_SCHEDULE": ticket.schedule,
        }
        run_id: int | None = None

        async def on_spawn(ident: ProcessIdentity) -> None:
            nonlocal run_id
            # Before the first await: a crash from here on leaves a record recovery can act on.
            if self.journal is not None:
                self.journal.spawned(ident)
            ref = ProcessRef(ident.pid, ident.pgid, ident.start_ticks)
            await failpoints.hit("after_spawn_before_running_row")
            now = self._clock.wall_ms()
            run_id = await self._store.start_run(ticket, ref, now)
            if self.journal is not None:
                self.journal.recorded(ident)
            self.started += 1
            self._events.changed(ticket.key, ticket.schedule)
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

        started = self._clock.monotonic_ms()
        result = await self._execute(payload, firing_vars, on_spawn, stop)
        if run_id is None:  # it never started (spawn failed): record the attempt anyway
            run_id = await self._store.start_run(ticket, None, self._clock.wall_ms())
        finish, verdict = self._judge(ticket, payload, run_id, result)
        record = asyncio.create_task(
            self._record(ticket, payload, finish, verdict, firing_vars),
            name=f"schedd-record-{ticket.key}",
        )
        self._recording.add(record)
        record.add_done_callback(self._recorded)
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
        """Wait until every ended run's record is committed (shutdown, before the store closes)."""
        while self._recording:
            await asyncio.wait(set(self._recording))

    def _recorded(self, record: asyncio.Task[None]) -> None:
        self._recording.discard(record)
        if not record.cancelled() and (exc := record.exception()) is not None:
            log.error("storing the end of a run failed: %s", exc, exc_info=exc)

    async def _execute(
        self,
        payload: RunPayload,
        firing_vars: dict[str, str],
        on_spawn: Callable[[ProcessIdentity], Awaitable[None]],
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

    def _judge(
        self, ticket: Ticket, payload: RunPayload, run_id: int, result: RunResult
    ) -> tuple[RunFinish, Verdict]:
        """The run's stored end and its firing's next state (pure: nothing is stored yet)."""
        crashed = result.outcome is RunOutcome.CRASH
        verdict = after_run(
            result.outcome,
            attempt=ticket.attempt,
            crashes=ticket.crashes + int(crashed),
            retry=payload.policies.retry,
            now_ms=self._clock.wall_ms(),
            take_budget=lambda: self._budgets.take(payload.tenant, self._clock.monotonic_ms()),
            rand=self._rand,
        )
        firing_reason = verdict.reason
        # ``retry_budget_exhausted`` stays bare: scripts match on it; the run has its reason.
        if firing_reason not in (None, BUDGET_EXHAUSTED) and result.reason:
            firing_reason = f"{firing_reason}; last: {result.reason}"
        finish = RunFinish(
            run_id=run_id,
            firing_id=ticket.firing_id,
            outcome=result.outcome.value,
            firing_state=verdict.state,
            ended_ms=self._clock.wall_ms(),
            exit_code=result.exit_code,
            signal=result.signal,
            reason=result.reason,
            output=result.output,
            output_bytes=len(result.output),
            output_truncated=result.output_truncated,
            crashed=crashed,
            retry_at_ms=verdict.retry_at_ms,
            firing_reason=firing_reason,
        )
        return finish, verdict

    async def _record(
        self,
        ticket: Ticket,
        payload: RunPayload,
        finish: RunFinish,
        verdict: Verdict,
        firing_vars: dict[str, str],
    ) -> None:
        """Store the run's end and its firing's next state; then announce retries and
        quarantine, which must not happen for an end that was never stored."""
        await failpoints.hit("after_run_before_result")
        await self._store.finish_run(finish)
        self.finished += 1
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
            reason = finish.firing_reason or "quarantined"
            log.warning(
                "quarantined: schedule=%s key=%s reason=%r (schedctl dlq show %d)",
                ticket.schedule,
                ticket.key,
                reason,
                ticket.firing_id,
                extra=_event(ticket, outcome="quarantined", reason=reason),
            )
            hook = payload.policies.on_quarantine
            if hook:
                self._hooks.quarantined(
                    hook, firing_vars, firing_id=ticket.firing_id, reason=reason
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
