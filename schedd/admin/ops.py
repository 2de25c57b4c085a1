"""The admin operations: what each request does, and the JSON it answers with.

Field names here are the stable scripting surface (``schedctl --json`` prints them unchanged,
``docs/admin-protocol.md`` lists them): add fields, never rename them. Times are given as UTC
RFC 3339 strings with milliseconds (``*_at``) and durations as integer milliseconds (``*_ms``).

Reads go to the store's reader connection, so they never wait behind a commit; ``wait`` blocks on
change events, not by polling.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schedd import __version__
from schedd.admin import dlq
from schedd.admin.protocol import Peer, Request, check_args
from schedd.admin.views import (
    MAX_PAGE,
    at,
    firing_json,
    int_arg,
    run_json,
    schedule_json,
    str_arg,
    zone_of,
)
from schedd.clock import Clock
from schedd.config import Config
from schedd.dispatcher import Dispatcher
from schedd.errors import InvalidArgument, NotFound
from schedd.events import FiringEvents
from schedd.keys import format_instant
from schedd.model import (
    FINAL_STATES,
    FiringState,
    policies_to_json,
    task_to_json,
)
from schedd.runner import Runner
from schedd.store.contract import Store
from schedd.store.records import FiringRecord
from schedd.timer import Timer
from schedd.triggers import make_trigger, occurrences
from schedd.workers.pool import PoolStats

MAX_WAIT_MS = 3_600_000


@dataclass
class DaemonView:
    """What the operations may look at: the daemon's parts, read-only by convention."""

    config: Config
    store: Store
    timer: Timer
    runner: Runner
    dispatcher: Dispatcher
    events: FiringEvents
    clock: Clock
    started_wall_ms: int
    started_mono_ms: int


Op = Callable[["AdminOps", Mapping[str, Any]], Awaitable[Any]]


class AdminOps:
    def __init__(self, view: DaemonView) -> None:
        self.v = view

    async def handle(self, request: Request, peer: Peer) -> Any:
        entry = _OPS.get(request.op)
        if entry is None:
            known = ", ".join(sorted(_OPS))
            raise InvalidArgument(f"op: unknown operation {request.op!r} (known: {known})")
        required, optional, fn = entry
        check_args(request.args, required=required, optional=optional)
        return await fn(self, request.args)

    async def status(self, args: Mapping[str, Any]) -> Any:
        v = self.v
        info = await v.store.info()
        now = v.clock.wall_ms()
        jumps = v.timer.jumps
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": format_instant(v.started_wall_ms),
            "uptime_ms": v.clock.monotonic_ms() - v.started_mono_ms,
            "now": format_instant(now),
            "config": {"path": str(v.config.path), "sha256": v.config.sha256},
            "store": {
                "path": info.path,
                "size_bytes": info.size_bytes,
                "wal_bytes": info.wal_bytes,
                "schema_version": info.schema_version,
                "synchronous": info.synchronous,
                "sqlite_version": info.sqlite_version,
            },
            "schedules": await v.store.count_schedules(),
            "wheel": {"handles": len(v.timer)},
            "queue": {"ready": v.runner.queued, "running": v.runner.busy},
            "workers": {
                "max": v.runner.capacity,
                "busy": v.runner.busy,
                "python": _pool_json(v.runner.pool.stats()),
            },
            "firings": {
                "unfinished": await v.store.count_firings(
                    [FiringState.COMMITTED, FiringState.RUNNING]
                ),
                "committed_total": v.dispatcher.committed,
                "runs_started": v.runner.started,
                "runs_finished": v.runner.finished,
            },
            "dlq": await dlq.summary(v.store, now),
            "last_firing_at": at(v.dispatcher.last_fired_wall_ms),
            "clock": {
                "jumps": jumps.count,
                "last_jump_ms": jumps.last_ms,
                "last_jump_at": at(jumps.last_at_wall_ms),
            },
        }

    async def schedules_list(self, args: Mapping[str, Any]) -> Any:
        limit = int_arg(args, "limit", MAX_PAGE, 1, MAX_PAGE)
        after = args.get("after")
        if after is not None and not isinstance(after, str):
            raise InvalidArgument(f"after: expected a schedule name, got {after!r}")
        recs = await self.v.store.list_schedules(limit=limit, after_name=after)
        return {
            "schedules": [schedule_json(r) for r in recs],
            "next": recs[-1].spec.name if len(recs) == limit else None,
        }

    async def schedules_show(self, args: Mapping[str, Any]) -> Any:
        rec = await self.v.store.get_schedule(str_arg(args, "name"))
        count = int_arg(args, "next", 5, 0, 1000)
        spec = rec.spec
        zone = ZoneInfo(zone_of(spec))
        upcoming: list[int] = []
        if rec.next_fire_ms is not None and count:
            upcoming = [rec.next_fire_ms]
            upcoming += occurrences(make_trigger(spec.trigger), rec.next_fire_ms, count - 1)
        out = schedule_json(rec)
        out.update(
            task=task_to_json(spec.task),
            policies=policies_to_json(spec.policies),
            jitter_ms=(rec.next_due_ms - rec.next_fire_ms)
            if rec.next_due_ms is not None and rec.next_fire_ms is not None
            else None,
            next=[
                {
                    "utc": format_instant(ms),
                    "local": datetime.fromtimestamp(ms / 1000, tz=UTC)
                    .astimezone(zone)
                    .isoformat(timespec="seconds"),
                }
                for ms in upcoming
            ],
        )
        return out

    async def runs_list(self, args: Mapping[str, Any]) -> Any:
        limit = int_arg(args, "limit", 50, 1, MAX_PAGE)
        before = args.get("before")
        if before is not None:
            before = int_arg(args, "before", 0, 1, 2**62)
        schedule = args.get("schedule")
        if schedule is not None:
            schedule = str_arg(args, "schedule")
        runs = await self.v.store.list_runs(schedule=schedule, limit=limit, before_id=before)
        return {
            "runs": [run_json(r) for r in runs],
            "next": runs[-1].id if len(runs) == limit else None,
        }

    async def runs_show(self, args: Mapping[str, Any]) -> Any:
        return run_json(await self.v.store.get_run(int_arg(args, "id", 0, 1, 2**62)))

    async def firings_show(self, args: Mapping[str, Any]) -> Any:
        return firing_json(await self.v.store.get_firing(str_arg(args, "key")))

    async def wait(self, args: Mapping[str, Any]) -> Any:
        """Block until a firing (``key``) reaches one of ``states`` (default: any final state)
        at attempt ``min_attempt`` or later, or until a schedule has ``count`` firings in a
        final state; answer with ``done``."""
        timeout = int_arg(args, "timeout_ms", 30_000, 0, MAX_WAIT_MS)
        deadline = self.v.clock.monotonic_ms() + timeout
        store = self.v.store
        if ("key" in args) == ("schedule" in args):
            raise InvalidArgument("wait: give exactly one of key or schedule")
        if "key" in args:
            key = str_arg(args, "key")
            states = _states_arg(args)
            min_attempt = int_arg(args, "min_attempt", 1, 1, 1_000_000)
            seen: dict[str, FiringRecord] = {}

            async def firing_done() -> bool:
                try:
                    seen["f"] = await store.get_firing(key)
                except NotFound:  # not submitted yet: keep waiting
                    return False
                return seen["f"].state in states and seen["f"].attempt >= min_attempt

            done = await self.v.events.wait_until(key, None, firing_done, deadline_mono_ms=deadline)
            return {"done": done, "firing": firing_json(seen["f"]) if "f" in seen else None}
        schedule = str_arg(args, "schedule")
        count = int_arg(args, "count", 1, 1, 1_000_000)
        finals = sorted(FINAL_STATES)
        got: dict[str, int] = {"n": 0}

        async def enough() -> bool:
            got["n"] = await store.count_firings_of(schedule, finals)
            return got["n"] >= count

        done = await self.v.events.wait_until(None, schedule, enough, deadline_mono_ms=deadline)
        return {"done": done, "finished": got["n"]}


def _pool_json(stats: PoolStats) -> dict[str, Any]:
    return {
        "size": stats.size,
        "idle": stats.idle,
        "busy": stats.busy,
        "starting": stats.starting,
        "spawned": stats.spawned,
        "recycled": stats.recycled,
        "shrunk": stats.shrunk,
        "replaced": stats.replaced,
        "failed_starts": stats.failed_starts,
        "protocol_errors": stats.protocol_errors,
    }


def _states_arg(args: Mapping[str, Any]) -> frozenset[FiringState]:
    raw = args.get("states")
    if raw is None:
        return FINAL_STATES
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument(f"states: expected a non-empty list of states, got {raw!r}")
    try:
        return frozenset(FiringState(s) for s in raw)
    except ValueError:
        valid = ", ".join(s.value for s in FiringState)
        raise InvalidArgument(f"states: unknown state in {raw!r} (valid: {valid})") from None


_OPS: dict[str, tuple[set[str], set[str], Op]] = {
    "status": (set(), set(), AdminOps.status),
    "schedules.list": (set(), {"limit", "after"}, AdminOps.schedules_list),
    "schedules.show": ({"name"}, {"next"}, AdminOps.schedules_show),
    "runs.list": (set(), {"schedule", "limit", "before"}, AdminOps.runs_list),
    "runs.show": ({"id"}, set(), AdminOps.runs_show),
    "firings.show": ({"key"}, set(), AdminOps.firings_show),
    "wait": (
        set(),
        {"key", "schedule", "states", "count", "timeout_ms", "min_attempt"},
        AdminOps.wait,
    ),
    "dlq.list": (set(), {"schedule", "limit", "before"}, dlq.list_dead),
    "dlq.show": (set(), {"id", "key"}, dlq.show),
    "dlq.retry": (set(), {"id", "key"}, dlq.retry),
    "dlq.purge": (set(), {"id", "key", "all", "older_than_ms"}, dlq.purge),
}
