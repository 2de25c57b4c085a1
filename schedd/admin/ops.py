"""The admin operations: what each request does, and the JSON it answers with.

Field names here are the stable scripting surface (``schedctl --json`` prints them unchanged,
``docs/admin-protocol.md`` lists them): add fields, never rename them. Times are given as UTC
RFC 3339 strings with milliseconds (``*_at``) and durations as integer milliseconds (``*_ms``).

Reads go to the store's reader connection, so they never wait behind a commit; ``wait`` blocks on
change events, not by polling.

**Who may do what** is decided here, per request, from the peer's ``SO_PEERCRED`` uid and groups
(:mod:`schedd.admin.access`): a stranger is refused every operation, a reader every operation
that changes state (``OpSpec.mutates``), and each state change is logged with the peer's uid and
pid before it runs. The check comes before argument validation, so a stranger learns nothing,
not even which operations exist. The operations themselves live by topic: ``schedules`` (changes),
``adhoc`` (submit), ``backlog`` (backlog, firings.remove), ``dlq``; reads and ``reload`` here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schedd import __version__
from schedd.admin import adhoc, backlog, dlq, schedules
from schedd.admin.access import Access, Role
from schedd.admin.protocol import Peer, Request, check_args
from schedd.admin.views import (
    MAX_PAGE,
    at,
    firing_json,
    int_arg,
    opt_str_arg,
    run_json,
    schedule_json,
    str_arg,
    time_arg,
    zone_of,
)
from schedd.clock import Clock
from schedd.config import Config
from schedd.dispatcher import Dispatcher
from schedd.errors import InvalidArgument, NotFound, PermissionDenied
from schedd.events import FiringEvents
from schedd.keys import format_instant
from schedd.lanes import every_lane
from schedd.model import FINAL_STATES, FiringState, RunOutcome
from schedd.ready import ReadyQueues
from schedd.reload import Reloader
from schedd.runner import Runner
from schedd.store.contract import Store
from schedd.store.records import FiringRecord, LaneDepth
from schedd.telemetry import Telemetry
from schedd.timer import Timer
from schedd.triggers import make_trigger, occurrences
from schedd.workers.pool import PoolStats

log = logging.getLogger("schedd.admin")

MAX_WAIT_MS = 3_600_000
#: What a run's ``state`` may be: running, or how it ended.
RUN_STATES = ("running", *(o.value for o in RunOutcome))


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
    reloader: Reloader
    telemetry: Telemetry
    #: ``hostname`` and ``machine_id``: which host's scheduler answered (read once at start).
    node: Mapping[str, str | None] = field(default_factory=dict)


Op = Callable[["AdminOps", Mapping[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class OpSpec:
    required: frozenset[str]
    optional: frozenset[str]
    fn: Op
    #: Changes state: operators only, and logged with the peer's uid and pid.
    mutates: bool = False


class AdminOps:
    """Dispatches requests to operations after checking who asks (SO_PEERCRED, [admin])."""

    def __init__(self, view: DaemonView, access: Access) -> None:
        self.v = view
        self.access = access

    async def handle(self, request: Request, peer: Peer) -> Any:
        role = self.access.role(peer)
        if role is None:
            raise PermissionDenied(
                f"uid {peer.uid} may not use this schedd: add the user or one of its groups to"
                " [admin] readers or operators"
            )
        spec = _OPS.get(request.op)
        if spec is None:
            known = ", ".join(sorted(_OPS))
            raise InvalidArgument(f"op: unknown operation {request.op!r} (known: {known})")
        if spec.mutates and role is not Role.OPERATOR:
            raise PermissionDenied(
                f"{request.op} changes state and uid {peer.uid} is a reader: add the user or"
                " one of its groups to [admin] operators"
            )
        check_args(request.args, required=spec.required, optional=spec.optional)
        if spec.mutates:
            log.info(
                "admin %s by uid=%d pid=%d args=%s",
                request.op,
                peer.uid,
                peer.pid,
                ",".join(sorted(request.args)) or "-",
            )
        return await spec.fn(self, request.args)

    async def status(self, args: Mapping[str, Any]) -> Any:
        v = self.v
        info = await v.store.info()
        now = v.clock.wall_ms()
        pool, ready = v.runner.pool.stats(), v.runner.ready
        jumps = v.timer.jumps
        # One read of the unfinished firings by lane serves the lanes, the catch-up backlog and
        # the unfinished count: each is a walk over every unfinished firing (500 000 in a pulse).
        lanes = await v.store.lanes()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "node": dict(v.node),
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
            "queue": {
                "ready": v.runner.queued,
                "max_ready": ready.max_ready,
                "peak": ready.peak,
                "running": v.runner.busy,
            },
            "catchup": _catchup_json(sum(d.catchup for d in lanes), ready),
            "lanes": _lanes_json(lanes, now),
            "workers": {
                "max": v.runner.capacity,
                "alive": pool.size,
                "busy": v.runner.busy,
                "python": _pool_json(pool),
            },
            "firings": {
                "unfinished": sum(d.ready + d.running for d in lanes),
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
        out = schedules.full_json(rec)
        out.update(
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
        runs = await self.v.store.list_runs(
            schedule=opt_str_arg(args, "schedule"),
            limit=limit,
            before_id=int_arg(args, "before", 0, 1, 2**62) if "before" in args else None,
            states=_run_states(args),
            since_ms=time_arg(args, "since") if "since" in args else None,
            key=opt_str_arg(args, "key"),
        )
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

    async def metrics(self, args: Mapping[str, Any]) -> Any:
        """The Prometheus exposition text, as the HTTP endpoint and the textfile serve it."""
        text = await self.v.telemetry.render()
        return {"content_type": self.v.telemetry.metrics.content_type, "text": text.decode()}

    async def reload(self, args: Mapping[str, Any]) -> Any:
        report = await self.v.reloader.reload()
        s = report.summary
        return {
            "config": {"path": str(report.config.path), "sha256": report.config.sha256},
            "added": list(s.added),
            "changed": list(s.changed),
            "removed": list(s.removed),
            "unchanged": s.unchanged,
            "restart_required": list(report.restart_required),
        }


def _lanes_json(depths: list[LaneDepth], now: int) -> dict[str, Any]:
    """Queue depth and lag per lane (``default`` always listed)."""
    return {
        d.lane: {
            "ready": d.ready,
            "running": d.running,
            "oldest_ready_at": at(d.oldest_ready_due_ms),
            "lag_ms": d.lag_ms(now),
        }
        for d in every_lane(depths)
    }


def _catchup_json(left: int, ready: ReadyQueues) -> dict[str, Any]:
    """The catch-up drain: what is left, how fast it goes now, and how long that will take."""
    drain = ready.drain
    return {
        "backlog": left,
        "draining": ready.draining,
        "rate_per_s": drain.rate if ready.draining else None,
        "eta_ms": drain.eta_ms(left) if ready.draining else None,
        "halvings": drain.halvings,
        "increases": drain.increases,
    }


def _run_states(args: Mapping[str, Any]) -> list[str] | None:
    raw = args.get("states")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or any(s not in RUN_STATES for s in raw):
        raise InvalidArgument(
            f"states: expected a non-empty list of {', '.join(RUN_STATES)}; got {raw!r}"
        )
    return list(dict.fromkeys(raw))


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


def _op(fn: Op, required: str = "", optional: str = "", *, mutates: bool = False) -> OpSpec:
    return OpSpec(frozenset(required.split()), frozenset(optional.split()), fn, mutates)


_OPS: dict[str, OpSpec] = {
    "status": _op(AdminOps.status),
    "schedules.list": _op(AdminOps.schedules_list, optional="limit after"),
    "schedules.show": _op(AdminOps.schedules_show, "name", "next"),
    "schedules.add": _op(schedules.add, "name spec", "paused", mutates=True),
    "schedules.add_many": _op(schedules.add_many, "schedules", mutates=True),
    "schedules.remove": _op(schedules.remove, "name", mutates=True),
    "schedules.pause": _op(schedules.pause, "name", mutates=True),
    "schedules.resume": _op(schedules.resume, "name", mutates=True),
    "schedules.trigger": _op(schedules.trigger, "name", "key", mutates=True),
    "schedules.backfill": _op(schedules.backfill, "name from to", "dry_run", mutates=True),
    "submit": _op(adhoc.submit, "task", "key at lane", mutates=True),
    "runs.list": _op(AdminOps.runs_list, optional="schedule limit before states since key"),
    "runs.show": _op(AdminOps.runs_show, "id"),
    "firings.show": _op(AdminOps.firings_show, "key"),
    "firings.remove": _op(backlog.remove, "schedule", "match states dry_run limit", mutates=True),
    "backlog": _op(backlog.backlog, optional="schedule top"),
    "wait": _op(AdminOps.wait, optional="key schedule states count timeout_ms min_attempt"),
    "dlq.list": _op(dlq.list_dead, optional="schedule limit before"),
    "dlq.show": _op(dlq.show, optional="id key"),
    "dlq.retry": _op(dlq.retry, optional="id key", mutates=True),
    "dlq.purge": _op(dlq.purge, optional="id key all older_than_ms", mutates=True),
    "metrics": _op(AdminOps.metrics),
    "reload": _op(AdminOps.reload, mutates=True),
}
