"""Runs committed firings with bounded concurrency and records every run.

A ticket (ids only) arrives once its firing is committed; a free slot reads the payload, builds
the task's environment, starts the command, records the process identity as the run starts
(so crash recovery can kill leftovers), and stores the result together with the firing's next
state. At most ``[workers] max`` runs are in flight.

Shutdown is two-phased: ``stop`` first stops taking tickets (committed-but-unstarted firings stay
in the store and are resumed at the next start), lets running tasks finish within the grace,
then cancels the rest, which kills their process groups. A run cut short this way is left
``running`` in the store, exactly as after a crash, and recovery re-runs it with attempt + 1.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from schedd.aio import wait_first
from schedd.clock import Clock
from schedd.errors import ScheddError
from schedd.events import FiringEvents
from schedd.keys import format_instant
from schedd.model import FiringState, RunOutcome
from schedd.payload import decode_payload
from schedd.policies import firing_state_after
from schedd.store.contract import Store
from schedd.store.records import ProcessRef, RunFinish, Ticket
from schedd.workers.command import CommandRequest, run_command
from schedd.workers.environment import build_env
from schedd.workers.procs import ProcessIdentity

log = logging.getLogger("schedd.runner")


class Runner:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        events: FiringEvents,
        *,
        max_workers: int,
        output_tail_bytes: int,
        env_allow: Sequence[str],
        inherited_env: Mapping[str, str],
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._max = max_workers
        self._tail = output_tail_bytes
        self._allow = tuple(env_allow)
        self._inherited = dict(inherited_env)
        self._queue: asyncio.Queue[Ticket] = asyncio.Queue()
        self._active: Counter[int] = Counter()
        self._slots: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.started = 0
        self.finished = 0

    # --- what the dispatcher and status see ------------------------------------------------

    def submit(self, ticket: Ticket) -> None:
        if ticket.schedule_id is not None:
            self._active[ticket.schedule_id] += 1
        self._queue.put_nowait(ticket)

    def is_active(self, schedule_id: int) -> bool:
        """A firing of this schedule is committed or running (the overlap policy asks)."""
        return self._active[schedule_id] > 0

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    @property
    def capacity(self) -> int:
        return self._max

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._slots = [
            asyncio.create_task(self._slot(), name=f"schedd-slot-{i}") for i in range(self._max)
        ]

    async def stop(self, grace_ms: int) -> None:
        """Stop taking work, let runs finish within ``grace_ms``, then kill what remains."""
        self._stopping = True
        for slot in self._slots:
            if slot not in self._in_flight:
                slot.cancel()
        if self._in_flight:
            log.info("waiting up to %d ms for %d running task(s)", grace_ms, len(self._in_flight))
            deadline = self._clock.monotonic_ms() + grace_ms
            await wait_first(asyncio.wait(set(self._in_flight)), self._clock.sleep_until(deadline))
            if self._in_flight:
                log.warning(
                    "killing %d task(s) still running after the grace", len(self._in_flight)
                )
        for slot in self._slots:
            slot.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)

    # --- the work -----------------------------------------------------------------------------

    async def _slot(self) -> None:
        while not self._stopping:
            ticket = await self._queue.get()
            if self._stopping:
                return
            run = asyncio.current_task()
            assert run is not None
            self._in_flight.add(run)
            try:
                await self._run_one(ticket)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run of %s failed inside schedd", ticket.key)
            finally:
                self._in_flight.discard(run)
                if ticket.schedule_id is not None:
                    self._active[ticket.schedule_id] -= 1
                    if self._active[ticket.schedule_id] <= 0:
                        del self._active[ticket.schedule_id]

    async def _run_one(self, ticket: Ticket) -> None:
        try:
            payload = decode_payload(await self._store.load_payload(ticket.payload_id))
        except (ScheddError, ValueError, KeyError) as exc:
            log.error("firing %s cannot start: unreadable payload: %s", ticket.key, exc)
            await self._store.set_firing_state(
                ticket.firing_id,
                FiringState.DEAD,
                reason=f"unreadable payload: {exc}",
                now_ms=self._clock.wall_ms(),
            )
            self._events.changed(ticket.key, ticket.schedule)
            return
        task = payload.task
        env = build_env(
            inherited=self._inherited,
            allow=self._allow,
            task_env=task.env,
            firing={
                "SCHEDD_IDEMPOTENCY_KEY": ticket.key,
                "SCHEDD_SCHEDULED_FOR": format_instant(ticket.scheduled_for_ms),
                "SCHEDD_ATTEMPT": str(ticket.attempt),
                "SCHEDD_SCHEDULE": ticket.schedule,
            },
        )
        request = CommandRequest(
            argv=task.argv,
            cwd=task.cwd,
            env=env,
            shell=task.shell,
            timeout_ms=payload.timeout_ms,
            kill_grace_ms=payload.kill_grace_ms,
            output_tail_bytes=self._tail,
        )
        run_id: int | None = None

        async def on_spawn(ident: ProcessIdentity) -> None:
            nonlocal run_id
            ref = ProcessRef(ident.pid, ident.pgid, ident.start_ticks)
            run_id = await self._store.start_run(ticket, ref, self._clock.wall_ms())
            self.started += 1
            self._events.changed(ticket.key, ticket.schedule)
            log.info(
                "run started: schedule=%s key=%s attempt=%d pid=%d",
                ticket.schedule,
                ticket.key,
                ticket.attempt,
                ident.pid,
            )

        started = self._clock.monotonic_ms()
        result = await run_command(request, self._clock, on_spawn=on_spawn)
        if run_id is None:  # it never started (spawn failed): record the attempt anyway
            run_id = await self._store.start_run(ticket, None, self._clock.wall_ms())
        duration = self._clock.monotonic_ms() - started
        state = firing_state_after(result.outcome)
        await self._store.finish_run(
            RunFinish(
                run_id=run_id,
                firing_id=ticket.firing_id,
                outcome=result.outcome.value,
                firing_state=state,
                ended_ms=self._clock.wall_ms(),
                exit_code=result.exit_code,
                signal=result.signal,
                reason=result.reason,
                output=result.output,
                output_bytes=len(result.output),
                output_truncated=result.output_truncated,
                crashed=result.outcome is RunOutcome.CRASH,
            )
        )
        self.finished += 1
        self._events.changed(ticket.key, ticket.schedule)
        level = logging.INFO if result.outcome is RunOutcome.SUCCEEDED else logging.WARNING
        log.log(
            level,
            "run finished: schedule=%s key=%s attempt=%d outcome=%s duration_ms=%d%s",
            ticket.schedule,
            ticket.key,
            ticket.attempt,
            result.outcome.value,
            duration,
            f" reason={result.reason!r}" if result.reason else "",
        )
