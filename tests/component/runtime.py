"""A whole runtime in-process: store, dispatcher, runner, attempts, pool, on a fake clock.

Tasks are real processes; only time is faked, so retry delays and overlap are asserted exactly.
The firing events use the system clock, so a test waiting for a firing state does not count as
a sleeper on the fake clock (``FakeClock.settled`` stays about the dispatcher alone).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schedd.attempt import Attempts
from schedd.clock import SystemClock
from schedd.dispatcher import Dispatcher
from schedd.events import FiringEvents
from schedd.hooks import Hooks
from schedd.model import FiringState, ScheduleSpec
from schedd.planner import initial_marks
from schedd.ratelimit import Budgets, Rate
from schedd.runner import Runner
from schedd.store.records import FiringRecord
from schedd.store.sqlite import SqliteStore
from schedd.timer import Timer
from schedd.workers.limits import LimitedLauncher
from schedd.workers.pool import PoolSettings, WorkerPool
from tests.fakes import FakeClock

REPO = str(Path(__file__).resolve().parents[2])
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@dataclass
class Runtime:
    clock: FakeClock
    store: SqliteStore
    events: FiringEvents
    runner: Runner
    dispatcher: Dispatcher
    pool: WorkerPool
    hooks: Hooks
    task: asyncio.Task[None]

    async def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        await self.clock.settled()

    async def until(
        self, key: str, *states: FiringState, attempt: int | None = None
    ) -> FiringRecord:
        """Wait (on events, no polling) until firing ``key`` is in one of ``states``."""
        seen: list[FiringRecord] = []

        async def check() -> bool:
            try:
                f = await self.store.get_firing(key)
            except Exception:  # noqa: BLE001 - not committed yet
                return False
            seen[:] = [f]
            return f.state in states and (attempt is None or f.attempt == attempt)

        ok = await self.events.wait_until(
            key, None, check, deadline_mono_ms=SystemClock().monotonic_ms() + 20_000
        )
        assert ok, f"{key} never reached {states} (last: {seen})"
        return seen[0]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.runner.stop(0)
        await self.hooks.close(0)
        await self.pool.close()
        await self.store.close()


async def start_runtime(
    path: Path,
    clock: FakeClock,
    specs: Sequence[ScheduleSpec],
    *,
    budgets: dict[str, Rate] | None = None,
    max_workers: int = 4,
    rand: float = 1.0,
) -> Runtime:
    store = SqliteStore(path)
    await store.open()
    now = clock.wall_ms()
    await store.reconcile(list(specs), initial=lambda s, hw: initial_marks(s, hw, now), now_ms=now)
    events = FiringEvents(SystemClock())
    pool = WorkerPool(
        PoolSettings(
            python=sys.executable,
            pythonpath=(REPO,),
            env=ENV,
            cwd=None,
            min_workers=0,
            max_workers=max_workers,
            max_tasks_per_worker=None,
            max_worker_rss_bytes=None,
            start_timeout_ms=30_000,
            idle_timeout_ms=3_600_000,
            output_tail_bytes=4096,
        ),
        SystemClock(),
    )
    launcher = LimitedLauncher()
    hooks = Hooks(clock, launcher, inherited_env=ENV, env_allow=["PATH"])
    attempts = Attempts(
        store,
        clock,
        events,
        pool=pool,
        launcher=launcher,
        hooks=hooks,
        budgets=Budgets(budgets or {}, clock.monotonic_ms()),
        inherited_env=ENV,
        env_allow=["PATH"],
        output_tail_bytes=4096,
        rand=lambda: rand,
    )
    runner = Runner(store, clock, events, attempts, pool, max_workers=max_workers)
    dispatcher = Dispatcher(store, Timer(clock), runner, events, clock, horizon_ms=60_000)
    attempts.on_retry = dispatcher.retry_scheduled
    await pool.start()
    runner.start()
    clock.unsettle()
    task = asyncio.create_task(dispatcher.run())
    await clock.settled()
    return Runtime(clock, store, events, runner, dispatcher, pool, hooks, task)
