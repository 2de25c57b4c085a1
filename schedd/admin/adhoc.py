"""``submit``: one-off work an application enqueues, and how any new firing reaches the runner.

An ad-hoc firing belongs to no schedule. Its ``schedule`` field is ``@submit``, which no schedule
can be named (names start with a letter or digit), so it never mixes with a schedule's history,
and overlap policies (which are per schedule) do not apply to it. Its key is the caller's, or
``submit:<uuid4>``; a key that already exists answers the existing firing with ``created:
false`` and stores nothing, so a client that retries a timed-out ``submit`` cannot enqueue the
work twice (DESIGN §1).

The task goes through the config file's rules (:func:`schedd.config.api.api_task`): the same keys,
the same ``[defaults]`` policies and payload cap, errors naming ``task.<key>``. A submission for
later is stored ``scheduled`` and woken like a retry, by the dispatcher's wake index: it survives
a restart and is never started early.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from schedd.admin.views import firing_json, key_arg, opt_str_arg, time_arg
from schedd.config.api import api_lane, api_task
from schedd.model import FiringState
from schedd.payload import encode_payload
from schedd.store.records import FiringRecord, NewFiring

if TYPE_CHECKING:
    from schedd.admin.ops import AdminOps, DaemonView

ADHOC_SCHEDULE = "@submit"


async def submit(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    task, policies, tenant = api_task(args["task"], v.config)
    now = v.clock.wall_ms()
    at_ms = time_arg(args, "at") if "at" in args else now
    lane = opt_str_arg(args, "lane")
    firing = NewFiring(
        key=key_arg(args) or f"submit:{uuid.uuid4().hex}",
        schedule_id=None,
        schedule=ADHOC_SCHEDULE,
        scheduled_for_ms=at_ms,
        due_ms=at_ms,
        state=FiringState.SCHEDULED if at_ms > now else FiringState.COMMITTED,
        payload_id=0,
        lane=api_lane(lane, v.config),
        reason="submitted",
        created_ms=now,
    )
    rec, created = await v.store.submit(firing, encode_payload(task, policies, tenant))
    if created:
        enqueue(v, rec)
    return {"firing": firing_json(rec), "created": created}


def enqueue(v: DaemonView, rec: FiringRecord) -> None:
    """Hand a firing just stored to whoever starts it: the runner now, or the wake index later."""
    if rec.state is FiringState.COMMITTED:
        v.runner.submit([rec.ticket()])
    elif rec.state is FiringState.SCHEDULED and rec.retry_at_ms is not None:
        v.dispatcher.retry_scheduled(rec.id, rec.retry_at_ms)
    v.events.changed(rec.key, rec.schedule)
