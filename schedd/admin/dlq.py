"""The dead-letter queue operations: ``dlq.list``, ``dlq.show``, ``dlq.retry``, ``dlq.purge``.

The dead-letter queue is not a table of its own: it is the firings whose state is ``dead``
(retries exhausted, or the tenant's retry budget spent) or ``quarantined`` (a poison task that
crashed twice). They keep their payload, every run and each run's output tail, so an operator
can see *what* ran and *how* it died before choosing to run it again or throw it away
(DESIGN §5).

**Naming a firing.** Every operation on one firing takes exactly one of ``id`` (what
``dlq.list`` shows) or ``key`` (what the task saw as ``SCHEDD_IDEMPOTENCY_KEY``). A firing that
exists but is not in the queue is a ``conflict``, not ``not_found``: the firing is there, its
state contradicts the request, and a script can tell "wrong key" (exit 3) from "already retried
or never failed" (exit 5). The same check guards ``show``, ``retry`` and ``purge``, so all three
answer a given firing the same way; the store re-checks inside its transaction, so a race with
another operator's retry still cannot retry a firing twice or purge a live one.

**Retry** is the store's ``requeue`` (``dead``/``quarantined`` → ``committed``, attempt + 1,
same key), then the runner. The firing is read back *before* it is handed to the runner, so the
answer is the re-queued firing (``committed``) rather than whatever the run has made of it by
the time the read completes. A crash between the commit and the hand-over loses nothing:
recovery re-queues every ``committed`` firing. The crash count is kept, so a poison task that
crashes once more is quarantined again at once instead of getting two fresh crashes.

**Purge** deletes firings with their runs (and payloads nothing else references). ``all``
without an age purges the whole queue; with ``older_than_ms`` only firings that entered the
queue longer ago than that.

The JSON shapes (``firing_json``, ``run_json``) and argument readers are
:mod:`schedd.admin.views`', shared with :mod:`schedd.admin.ops`, which registers these
operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from schedd.admin.views import MAX_PAGE, firing_json, int_arg, run_json, str_arg
from schedd.errors import Conflict, InvalidArgument
from schedd.keys import format_instant
from schedd.model import task_to_json
from schedd.payload import decode_payload
from schedd.store.contract import Store
from schedd.store.records import FiringRecord
from schedd.store.rows import DLQ_STATES

if TYPE_CHECKING:
    from schedd.admin.ops import AdminOps

#: Largest id or cursor accepted (the store's own "no cursor" bound).
MAX_ID = 2**62
#: ``all`` without an age: every firing, whatever ``updated_ms`` a wall-clock step left it with.
_EVERYTHING = MAX_ID


async def summary(store: Store, now_ms: int) -> dict[str, Any]:
    """The ``dlq`` block of ``status``: how many firings wait for an operator, and since when.

    The age is never negative: after the wall clock stepped back, the oldest entry's time may
    lie after "now", and 0 is the truthful lower bound.
    """
    oldest = await store.oldest_dead_ms()
    return {
        "size": await store.count_firings(DLQ_STATES),
        "oldest_at": None if oldest is None else format_instant(oldest),
        "oldest_age_ms": None if oldest is None else max(0, now_ms - oldest),
    }


async def list_dead(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    limit = int_arg(args, "limit", 50, 1, MAX_PAGE)
    before = int_arg(args, "before", 0, 1, MAX_ID) if "before" in args else None
    schedule = str_arg(args, "schedule") if "schedule" in args else None
    firings = await ops.v.store.list_dead(schedule=schedule, limit=limit, before_id=before)
    return {
        "firings": [firing_json(f) for f in firings],
        "next": firings[-1].id if len(firings) == limit else None,
    }


async def show(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    store = ops.v.store
    firing = await _dead_firing(store, args)
    payload = decode_payload(await store.load_payload(firing.payload_id))
    out = firing_json(firing)
    out.update(
        task=task_to_json(payload.task),
        tenant=payload.tenant,
        attempts=[run_json(r) for r in await store.runs_of(firing.id)],
    )
    return out


async def retry(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    firing = await _dead_firing(v.store, args)
    ticket = await v.store.requeue(firing.id, v.clock.wall_ms())
    requeued = await v.store.get_firing_by_id(ticket.firing_id)
    v.runner.submit([ticket])
    v.events.changed(ticket.key, ticket.schedule)
    return firing_json(requeued)


async def purge(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    if sum(name in args for name in ("id", "key", "all")) != 1:
        raise InvalidArgument("give exactly one of id, key or all")
    if "all" not in args:
        if "older_than_ms" in args:
            raise InvalidArgument("older_than_ms: only allowed with all")
        firing = await _dead_firing(v.store, args)
        return {"purged": await v.store.purge_dead(firing_ids=[firing.id], older_than_ms=None)}
    if args["all"] is not True:
        raise InvalidArgument(f"all: expected true, got {args['all']!r}")
    cutoff = _EVERYTHING
    if "older_than_ms" in args:
        cutoff = v.clock.wall_ms() - int_arg(args, "older_than_ms", 0, 1, MAX_ID)
    return {"purged": await v.store.purge_dead(firing_ids=None, older_than_ms=cutoff)}


async def _dead_firing(store: Store, args: Mapping[str, Any]) -> FiringRecord:
    """The firing named by ``id`` or ``key``, which must be in the dead-letter queue."""
    if ("id" in args) == ("key" in args):
        raise InvalidArgument("give exactly one of id or key")
    if "id" in args:
        firing = await store.get_firing_by_id(int_arg(args, "id", 0, 1, MAX_ID))
    else:
        firing = await store.get_firing(str_arg(args, "key"))
    if firing.state not in DLQ_STATES:
        raise Conflict(
            f"firing {firing.key!r} (id {firing.id}) is {firing.state.value}, not in the"
            " dead-letter queue (only dead or quarantined firings are)"
        )
    return firing
