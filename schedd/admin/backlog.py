"""``backlog`` and ``firings.remove``: find a bad batch, then take it out, in minutes.

The story behind them: an application enqueues ten thousand firings with a broken argument, or
one schedule's payloads balloon; the operator needs to see *which* schedule, lane and state the
queue is made of, and how many bytes it holds, and then to cancel exactly the matching firings
without touching the rest.

``backlog`` groups the open firings (scheduled, committed, running, failed) by schedule, lane
and state with counts, oldest due time and payload bytes, and lists the largest payloads.
``firings.remove`` cancels queued firings of one schedule whose key or payload text contains a
string, ``limit`` at a time, so a client can show progress over a large set and each
transaction stays short (the dispatcher's commits interleave with it). Removed firings end
``cancelled`` ("removed by an operator"): history is kept, and the runner drops any it already
holds before starting them. A firing that is already running is never removed; stop it with its
timeout or overlap policy, not by pulling its row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from schedd.admin.views import at, bool_arg, int_arg, opt_str_arg, str_arg
from schedd.errors import InvalidArgument
from schedd.keys import format_instant
from schedd.model import FiringState

if TYPE_CHECKING:
    from schedd.admin.ops import AdminOps

#: The states ``firings.remove`` may take firings from: queued, not started.
REMOVABLE = (FiringState.SCHEDULED, FiringState.COMMITTED, FiringState.FAILED)
MAX_REMOVE_BATCH = 10_000


async def backlog(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    b = await ops.v.store.backlog(
        schedule=opt_str_arg(args, "schedule"), top=int_arg(args, "top", 10, 0, 100)
    )
    return {
        "groups": [
            {
                "schedule": g.schedule,
                "lane": g.lane,
                "state": g.state.value,
                "count": g.count,
                "oldest_due_at": format_instant(g.oldest_due_ms),
                "payload_bytes": g.payload_bytes,
            }
            for g in b.groups
        ],
        "largest": [
            {
                "id": i.id,
                "key": i.key,
                "schedule": i.schedule,
                "state": i.state.value,
                "due_at": at(i.due_ms),
                "payload_bytes": i.payload_bytes,
            }
            for i in b.largest
        ],
        "total": {"count": b.count, "payload_bytes": b.payload_bytes},
    }


async def remove(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    schedule = str_arg(args, "schedule")
    removal = await v.store.remove_firings(
        schedule=schedule,
        match=opt_str_arg(args, "match"),
        states=_states(args),
        limit=int_arg(args, "limit", 1000, 1, MAX_REMOVE_BATCH),
        dry_run=bool_arg(args, "dry_run", False),
        now_ms=v.clock.wall_ms(),
    )
    v.runner.discard(removal.removed)
    for f in removal.removed:
        v.events.changed(f.key, schedule)
    return {
        "matched": removal.matched,
        "removed": len(removal.removed),
        "remaining": removal.matched - len(removal.removed),
        "sample": list(removal.sample),
    }


def _states(args: Mapping[str, Any]) -> tuple[FiringState, ...]:
    raw = args.get("states")
    if raw is None:
        return REMOVABLE
    allowed = ", ".join(s.value for s in REMOVABLE)
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise InvalidArgument(f"states: expected a non-empty list of {allowed}; got {raw!r}")
    bad = [s for s in raw if s not in {r.value for r in REMOVABLE}]
    if bad:
        raise InvalidArgument(
            f"states: {', '.join(map(repr, bad))} cannot be removed (only queued firings:"
            f" {allowed})"
        )
    return tuple(FiringState(s) for s in dict.fromkeys(raw))
