"""Re-reading the config file while running: ``schedctl reload`` and SIGHUP.

What a reload changes is exactly the schedules: the file's ``[schedules.*]`` are reconciled into
the store (added, changed with their high-water mark kept, removed with their history kept) and
armed in the dispatcher, and ``[defaults]``/``[tenants]`` reach them through their specs.
``[admin] readers``/``operators`` also apply at once, so revoking someone needs no restart. Every
other setting (socket, store, workers, logging, tenants' budgets) belongs to objects built at
start-up; a reload reports which sections differ (``restart_required``) instead of half-applying
them, so an operator never wonders which value is live.

A file that does not validate changes nothing: the error lists every problem and the daemon
keeps the config it runs with. Reloads are serialised, so SIGHUP twice in a row cannot interleave
two reconciles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from schedd import heap
from schedd.clock import Clock
from schedd.config import Config, load_config
from schedd.dispatcher import Dispatcher
from schedd.planner import initial_marks
from schedd.store.contract import Store
from schedd.store.records import ReconcileSummary, ScheduleRecord

log = logging.getLogger("schedd")

#: Sections whose settings are fixed at start-up (schedules, defaults and access are live).
_FIXED = (
    "daemon",
    "store",
    "admin",
    "workers",
    "dispatch",
    "catchup",
    "lanes",
    "logging",
    "tenants",
    "metrics",
    "heartbeat",
)


@dataclass(frozen=True)
class ReloadReport:
    config: Config
    summary: ReconcileSummary
    restart_required: tuple[str, ...]


class Reloader:
    """Owns "the config the daemon runs with" after start-up; ``on_config`` hears each change."""

    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher, clock: Clock) -> None:
        self.config = config
        #: What the fixed sections still run with, however many reloads happened since.
        self._started_with = config
        self._store = store
        self._dispatcher = dispatcher
        self._clock = clock
        self._lock = asyncio.Lock()
        self.on_config: Callable[[Config], None] = lambda _new: None
        #: Told the added and changed schedules, and each removed name (overdue tracking).
        self.watch: Callable[[Sequence[ScheduleRecord]], Awaitable[None]] = _ignore
        self.unwatch: Callable[[str], None] = lambda name: None

    async def reload(self) -> ReloadReport:
        async with self._lock:
            heap.hold()  # parsing a big file with collections running takes twice as long
            try:
                return await self._reload()
            finally:
                heap.settle()

    async def _reload(self) -> ReloadReport:
        path = self.config.path
        assert path is not None, "a running daemon's config always has a path"
        new = await asyncio.to_thread(load_config, Path(path))
        now = self._clock.wall_ms()
        summary = await self._store.reconcile(
            new.schedules, initial=partial(initial_marks, now_ms=now), now_ms=now
        )
        new = new.settled()
        touched = [
            await self._store.get_schedule(name) for name in (*summary.added, *summary.changed)
        ]
        for rec in touched:
            self._dispatcher.schedule_moved(rec)
        await self.watch(touched)
        for name in summary.removed:
            self.unwatch(name)
        report = ReloadReport(new, summary, restart_required(self._started_with, new))
        self.config = new
        self.on_config(new)
        log.info(
            "config %s reloaded: %s%s",
            path,
            describe(summary),
            f"; restart to apply [{'], ['.join(report.restart_required)}]"
            if report.restart_required
            else "",
        )
        return report


def describe(summary: ReconcileSummary) -> str:
    return (
        f"{len(summary.added)} schedule(s) added, {len(summary.changed)} changed,"
        f" {len(summary.removed)} removed, {summary.unchanged} unchanged"
    )


async def _ignore(schedules: Sequence[ScheduleRecord]) -> None:
    pass


def restart_required(old: Config, new: Config) -> tuple[str, ...]:
    """The sections whose changes take effect only at the next start."""
    live_admin = {"readers": (), "operators": ()}
    changed = []
    for section in _FIXED:
        a, b = getattr(old, section), getattr(new, section)
        if section == "admin":
            a, b = dataclasses.replace(a, **live_admin), dataclasses.replace(b, **live_admin)
        if a != b:
            changed.append(section)
    return tuple(changed)
