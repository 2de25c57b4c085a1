"""The operations that change schedules: add, add_many, remove, pause, resume, trigger, backfill.

**Sources.** A schedule added here is marked ``api`` and persists across restarts; the config
file's reconcile never touches it. A ``config`` schedule can be paused, resumed, triggered and
backfilled, but not removed here: the file would bring it back at the next reload, so removal is
refused with the way to do it. Pausing sticks across reloads and restarts for both.

**Firings made by hand.** ``trigger`` runs a schedule now under a key that says so
(``NAME@manual:<now>``, or the caller's), even while paused. ``backfill`` creates one firing per
occurrence in a past range under the *on-time* key (``NAME@<occurrence>``): an occurrence that
already ran keeps its firing and is not repeated, so a backfill can be re-run after a partial one.
Both go through the runner like any firing, so the schedule's timeout, retries and overlap policy
apply. Neither moves the high-water mark: the schedule's own series is untouched.

**Many at once.** ``add_many`` is ``add`` for up to :data:`MAX_ADD_MANY` schedules: each entry is
read by the same converter (:func:`~schedd.config.api.api_schedule`), every problem of every
entry is reported at once naming the entry's index and name, and the store inserts them all in
one transaction or none. It answers with counts, not the records, so the answer stays small.

Each change re-arms the dispatcher (:meth:`~schedd.dispatcher.Dispatcher.schedule_moved`), since
the dispatcher only re-reads the store for times beyond what it has loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from schedd.admin.adhoc import enqueue
from schedd.admin.protocol import check_args
from schedd.admin.views import bool_arg, firing_json, key_arg, schedule_json, str_arg, time_arg
from schedd.config import Config
from schedd.config.api import api_schedule
from schedd.errors import ConfigError, Conflict, InvalidArgument
from schedd.keys import firing_key, format_instant
from schedd.model import FiringState, Source, policies_to_json, task_to_json
from schedd.planner import initial_marks
from schedd.store.contract import ScheduleToAdd
from schedd.store.records import NewFiring, ScheduleRecord
from schedd.triggers import make_trigger

if TYPE_CHECKING:
    from schedd.admin.ops import AdminOps, DaemonView

#: Most occurrences one backfill creates; a larger range is refused, not truncated.
MAX_BACKFILL = 10_000
#: Most schedules one ``add_many`` takes. A request of this many plain schedules is ~75 KB,
#: well inside ``[admin] max_request_bytes``. Reading it takes ~10 ms of the event loop (the
#: config validation; a cron expression not seen before adds ~0.15 ms to compile it with
#: croniter), in slices of :data:`READ_SLICE`;
#: encoding and inserting them holds the loop ~15 ms and the writer ~10 ms, about one dispatch
#: step each, so a bulk load delays a due firing by no more than a pulse would.
MAX_ADD_MANY = 1000
#: Entries read between two turns of the event loop (~1 ms of work, ~15 ms of new crons).
READ_SLICE = 100
#: Problems listed in one refusal of ``add_many``; the rest are counted.
MAX_PROBLEMS = 20
#: The keys of an ``add_many`` entry: ``add``'s arguments.
_ENTRY_REQUIRED = frozenset({"name", "spec"})
_ENTRY_OPTIONAL = frozenset({"paused"})


def full_json(rec: ScheduleRecord) -> dict[str, Any]:
    """A schedule with its task and policies (``schedules.show`` adds the next occurrences)."""
    out = schedule_json(rec)
    out.update(task=task_to_json(rec.spec.task), policies=policies_to_json(rec.spec.policies))
    return out


async def add(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    spec = api_schedule(str_arg(args, "name"), args["spec"], v.config)
    now = v.clock.wall_ms()
    next_fire, next_due = initial_marks(spec, None, now)
    rec = await v.store.add_schedule(
        spec,
        next_fire_ms=next_fire,
        next_due_ms=next_due,
        paused=bool_arg(args, "paused", False),
        now_ms=now,
    )
    v.dispatcher.schedule_moved(rec)
    await v.telemetry.watch([rec])
    return full_json(rec)


async def add_many(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    """``add`` for many: every entry read (all problems reported), then all stored or none."""
    v = ops.v
    entries = args["schedules"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ADD_MANY:
        got = f"{len(entries)} entries" if isinstance(entries, list) else repr(entries)
        raise InvalidArgument(
            f"schedules: expected a list of 1 to {MAX_ADD_MANY} schedules, got {_clip(got)}"
        )
    now = v.clock.wall_ms()
    adds: list[ScheduleToAdd] = []
    problems: list[tuple[str, str]] = []
    for index, entry in enumerate(entries):
        if index and index % READ_SLICE == 0:
            await asyncio.sleep(0)  # let due firings and other requests through
        try:
            adds.append(_to_add(entry, v.config, now))
        except InvalidArgument as exc:
            problems += _problems_of(exc, _where(index, entry))
    if problems:
        raise ConfigError(_abridged(problems))
    recs = await v.store.add_schedules(adds, now_ms=now)
    for rec in recs:  # each a cancel and an insert in the wheel: O(1)
        v.dispatcher.schedule_moved(rec)
    await v.telemetry.watch(recs)
    return {"added": len(recs), "paused": sum(rec.paused for rec in recs)}


def _to_add(entry: object, config: Config, now_ms: int) -> ScheduleToAdd:
    """One ``add_many`` entry, read exactly as ``add`` reads its arguments."""
    if not isinstance(entry, Mapping):
        raise InvalidArgument(f"expected an object with name and spec, got {_clip(repr(entry))}")
    check_args(entry, required=_ENTRY_REQUIRED, optional=_ENTRY_OPTIONAL)
    spec = api_schedule(str_arg(entry, "name"), entry["spec"], config)
    # Cron triggers are compiled once per (expression, zone) and keep their last answer
    # (schedd.triggers), so entries sharing an expression at this same ``now`` reuse it.
    next_fire, next_due = initial_marks(spec, None, now_ms)
    return ScheduleToAdd(spec, next_fire, next_due, bool_arg(entry, "paused", False))


def _where(index: int, entry: object) -> str:
    """``schedules[3] 'nightly'``: the entry's place in the list, and its name when it has one."""
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return f"schedules[{index}]" + (f" {_clip(repr(name))}" if isinstance(name, str) else "")


def _problems_of(exc: InvalidArgument, where: str) -> list[tuple[str, str]]:
    if isinstance(exc, ConfigError):
        return [(f"{where}: {key}" if key else where, msg) for key, msg in exc.problems]
    return [(where, str(exc))]


def _abridged(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first :data:`MAX_PROBLEMS` (a thousand bad entries must not make a huge answer)."""
    rest = len(problems) - MAX_PROBLEMS
    more = f"... and {rest} more problem(s); " if rest > 0 else ""
    return [*problems[:MAX_PROBLEMS], ("", f"{more}nothing was added")]


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


async def remove(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    name = str_arg(args, "name")
    rec = await v.store.get_schedule(name)
    if rec.spec.source is Source.CONFIG:
        raise Conflict(
            f"schedule {name!r} is defined in the config file {v.config.path}; delete its"
            " [schedules] table there and run `schedctl reload`"
        )
    await v.store.remove_schedule(name)
    v.dispatcher.schedule_removed(rec.id)
    v.telemetry.unwatch(name)
    return {"removed": name}


async def pause(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    return await _set_paused(ops.v, str_arg(args, "name"), True)


async def resume(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    return await _set_paused(ops.v, str_arg(args, "name"), False)


async def trigger(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    rec = await v.store.get_schedule(str_arg(args, "name"))
    now = v.clock.wall_ms()
    key = key_arg(args) or f"{rec.spec.name}@manual:{format_instant(now)}"
    [(firing, created)] = await v.store.insert_firings(
        [_firing(rec, key, now, "triggered by an operator", now)]
    )
    if created:
        enqueue(v, firing)
    return {"firing": firing_json(firing), "created": created}


async def backfill(ops: AdminOps, args: Mapping[str, Any]) -> Any:
    v = ops.v
    rec = await v.store.get_schedule(str_arg(args, "name"))
    start, end = time_arg(args, "from"), time_arg(args, "to")
    now = v.clock.wall_ms()
    if end < start:
        raise InvalidArgument(f"to: {args['to']!r} is before from ({args['from']!r})")
    if end > now:
        raise InvalidArgument(
            f"to: {args['to']!r} is in the future; backfill replays past occurrences only"
        )
    occurrences = _between(rec, start, end)
    keys = [firing_key(rec.spec.name, occ) for occ in occurrences]
    result: dict[str, Any] = {
        "occurrences": len(occurrences),
        "first_key": keys[0] if keys else None,
        "last_key": keys[-1] if keys else None,
    }
    if bool_arg(args, "dry_run", False) or not occurrences:
        existing = len(await v.store.existing_keys(keys))
        return {**result, "created": 0, "existing": existing}
    stored = await v.store.insert_firings(
        [
            _firing(rec, key, occ, "backfilled by an operator", now)
            for key, occ in zip(keys, occurrences, strict=True)
        ]
    )
    created = [firing for firing, new in stored if new]
    for firing in created:
        enqueue(v, firing)
    return {**result, "created": len(created), "existing": len(stored) - len(created)}


def _between(rec: ScheduleRecord, start: int, end: int) -> list[int]:
    trigger = make_trigger(rec.spec.trigger)
    found: list[int] = []
    cursor = trigger.next_after(start - 1)
    while cursor is not None and cursor <= end:
        if len(found) == MAX_BACKFILL:
            raise InvalidArgument(
                f"from/to: the range holds more than {MAX_BACKFILL} occurrences of"
                f" {rec.spec.name!r}; narrow the range and backfill it in parts"
            )
        found.append(cursor)
        cursor = trigger.next_after(cursor)
    return found


def _firing(
    rec: ScheduleRecord, key: str, scheduled_for_ms: int, reason: str, now_ms: int
) -> NewFiring:
    return NewFiring(
        key=key,
        schedule_id=rec.id,
        schedule=rec.spec.name,
        scheduled_for_ms=scheduled_for_ms,
        due_ms=scheduled_for_ms,
        state=FiringState.COMMITTED,
        payload_id=rec.payload_id,
        lane=rec.spec.lane,
        reason=reason,
        created_ms=now_ms,
    )


async def _set_paused(v: DaemonView, name: str, paused: bool) -> Any:
    rec = await v.store.set_paused(name, paused, v.clock.wall_ms())
    v.dispatcher.schedule_moved(rec)
    return schedule_json(rec)
