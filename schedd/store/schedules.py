"""The schedule side of the SQLite store: reconcile, the admin API's CRUD, and dispatch.

A mixin of :class:`~schedd.store.sqlite.SqliteStore`. Config schedules (``reconcile``) and API
schedules (``add_schedule``) are written by one pair of helpers, so both store the same rule,
content-addressed payload, digest and task kind, and a schedule reads back the same whichever
way it came in. Removing a schedule deletes only its row: firings and runs keep no foreign key
to it and stay as history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite

from schedd.errors import Conflict, IllegalTransition, NotFound
from schedd.model import (
    FiringState,
    PythonTask,
    ScheduleSpec,
    Source,
    TaskSpec,
    schedule_rule_to_json,
)
from schedd.payload import encode_payload
from schedd.store.base import StoreMixin
from schedd.store.contract import Planner
from schedd.store.intake import insert_new, store_payload
from schedd.store.records import (
    Expectation,
    NewFiring,
    ReconcileSummary,
    ScheduleRecord,
    ScheduleRule,
    Ticket,
)
from schedd.store.rows import SCHEDULE_SELECT, chunks, marks, schedule_row, spec_digest

log = logging.getLogger("schedd.store")

#: How an operator is told where a schedule of that name came from.
_ORIGIN = {
    Source.CONFIG.value: "defined in the config file",
    Source.API.value: "added through the admin API",
}


def task_kind(task: TaskSpec) -> str:
    return "python" if isinstance(task, PythonTask) else "command"


async def _spec_columns(conn: aiosqlite.Connection, spec: ScheduleSpec) -> tuple[Any, ...]:
    """``(rule, payload_id, spec_hash, task_kind)``: what a schedule's definition stores."""
    body = encode_payload(spec.task, spec.policies, spec.tenant)
    return (
        json.dumps(schedule_rule_to_json(spec), sort_keys=True),
        await store_payload(conn, body),
        spec_digest(spec),
        task_kind(spec.task),
    )


async def _insert_schedule(
    conn: aiosqlite.Connection,
    spec: ScheduleSpec,
    *,
    next_fire_ms: int | None,
    next_due_ms: int | None,
    paused: bool,
    now_ms: int,
) -> None:
    await conn.execute(
        "INSERT INTO schedules (name, source, rule, payload_id, spec_hash, task_kind,"
        " next_fire_ms, next_due_ms, paused, created_ms, updated_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            spec.name,
            spec.source.value,
            *await _spec_columns(conn, spec),
            next_fire_ms,
            next_due_ms,
            int(paused),
            now_ms,
            now_ms,
        ),
    )


_BY_NAME = SCHEDULE_SELECT + " WHERE s.name = ?"


def _named(rows: Sequence[Any], name: str) -> ScheduleRecord:
    if not rows:
        raise NotFound(f"schedule {name!r} does not exist")
    return schedule_row(rows[0])


async def _select_schedule(conn: aiosqlite.Connection, name: str) -> ScheduleRecord:
    """The schedule as the write transaction sees it (the reader may not see it yet)."""
    return _named(list(await conn.execute_fetchall(_BY_NAME, (name,))), name)


class SchedulesMixin(StoreMixin):
    async def reconcile(
        self,
        specs: Sequence[ScheduleSpec],
        *,
        initial: Callable[[ScheduleSpec, int | None], tuple[int | None, int | None]],
        now_ms: int,
    ) -> ReconcileSummary:
        async def unit(conn: aiosqlite.Connection) -> ReconcileSummary:
            rows = await conn.execute_fetchall(
                "SELECT id, name, source, spec_hash, fired_through_ms FROM schedules"
            )
            stored = {r[1]: r for r in rows}
            added: list[str] = []
            changed: list[str] = []
            unchanged = 0
            for spec in specs:
                row = stored.get(spec.name)
                if row is not None and row[2] != Source.CONFIG.value:
                    raise Conflict(
                        f"schedules.{spec.name}: a schedule of that name was added through the"
                        " admin API; remove it first or rename the config schedule"
                    )
                if row is not None and row[3] == spec_digest(spec):
                    unchanged += 1
                    continue
                if row is None:
                    next_fire, next_due = initial(spec, None)
                    await _insert_schedule(
                        conn,
                        spec,
                        next_fire_ms=next_fire,
                        next_due_ms=next_due,
                        paused=False,
                        now_ms=now_ms,
                    )
                    added.append(spec.name)
                else:
                    next_fire, next_due = initial(spec, row[4])
                    await conn.execute(
                        "UPDATE schedules SET rule = ?, payload_id = ?, spec_hash = ?,"
                        " task_kind = ?, next_fire_ms = ?, next_due_ms = ?, updated_ms = ?"
                        " WHERE id = ?",
                        (*await _spec_columns(conn, spec), next_fire, next_due, now_ms, row[0]),
                    )
                    changed.append(spec.name)
            wanted = {s.name for s in specs}
            removed = [
                name
                for name, r in stored.items()
                if r[2] == Source.CONFIG.value and name not in wanted
            ]
            for name in removed:
                await conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            return ReconcileSummary(tuple(added), tuple(changed), tuple(sorted(removed)), unchanged)

        return await self._write(unit)

    async def add_schedule(
        self,
        spec: ScheduleSpec,
        *,
        next_fire_ms: int | None,
        next_due_ms: int | None,
        paused: bool,
        now_ms: int,
    ) -> ScheduleRecord:
        async def unit(conn: aiosqlite.Connection) -> ScheduleRecord:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT source FROM schedules WHERE name = ?", (spec.name,)
                )
            )
            if rows:
                origin = _ORIGIN.get(rows[0][0], f"source {rows[0][0]!r}")
                raise Conflict(f"schedule {spec.name!r} already exists ({origin})")
            await _insert_schedule(
                conn,
                spec,
                next_fire_ms=next_fire_ms,
                next_due_ms=next_due_ms,
                paused=paused,
                now_ms=now_ms,
            )
            return await _select_schedule(conn, spec.name)

        return await self._write(unit)

    async def remove_schedule(self, name: str) -> ScheduleRecord:
        async def unit(conn: aiosqlite.Connection) -> ScheduleRecord:
            record = await _select_schedule(conn, name)
            await conn.execute("DELETE FROM schedules WHERE id = ?", (record.id,))
            return record

        return await self._write(unit)

    async def set_paused(self, name: str, paused: bool, now_ms: int) -> ScheduleRecord:
        async def unit(conn: aiosqlite.Connection) -> ScheduleRecord:
            await conn.execute(
                "UPDATE schedules SET paused = ?, updated_ms = ? WHERE name = ? AND paused != ?",
                (int(paused), now_ms, name, int(paused)),
            )
            return await _select_schedule(conn, name)

        return await self._write(unit)

    async def get_schedule(self, name: str) -> ScheduleRecord:
        return _named(await self._read(_BY_NAME, (name,)), name)

    async def list_schedules(
        self, *, limit: int, after_name: str | None = None
    ) -> list[ScheduleRecord]:
        rows = await self._read(
            SCHEDULE_SELECT + " WHERE s.name > ? ORDER BY s.name LIMIT ?",
            (after_name or "", limit),
        )
        return [schedule_row(r) for r in rows]

    async def count_schedules(self) -> int:
        rows = await self._read("SELECT count(*) FROM schedules")
        return int(rows[0][0])

    async def expectations(self) -> list[Expectation]:
        # One scan of the small rule column, never of payloads; called once, after READY.
        rows = await self._read(
            "SELECT name, created_ms, json_extract(rule, '$.policies.expect_success_within_ms'),"
            " json_extract(rule, '$.policies.on_overdue') FROM schedules"
            " WHERE json_extract(rule, '$.policies.expect_success_within_ms') IS NOT NULL"
            " ORDER BY name"
        )
        return [
            Expectation(r[0], int(r[2]), None if r[3] is None else tuple(json.loads(r[3])), r[1])
            for r in rows
        ]

    async def due_schedules(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int, bool]]:
        due, sid = after if after is not None else (-(2**62), -1)
        rows = await self._read(
            "SELECT next_due_ms, id, task_kind = 'python' FROM schedules"
            " WHERE next_due_ms IS NOT NULL AND paused = 0"
            " AND (next_due_ms, id) > (?, ?) AND next_due_ms <= ?"
            " ORDER BY next_due_ms, id LIMIT ?",
            (due, sid, until_ms, limit),
        )
        return [(int(r[0]), int(r[1]), bool(r[2])) for r in rows]

    async def dispatch(self, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
        async def unit(conn: aiosqlite.Connection) -> list[Ticket]:
            tickets: list[Ticket] = []
            for chunk in chunks(list(schedule_ids)):
                rows = await conn.execute_fetchall(
                    "SELECT id, name, rule, paused, fired_through_ms, next_fire_ms,"
                    f" next_due_ms, payload_id FROM schedules WHERE id IN ({marks(len(chunk))})",
                    chunk,
                )
                firings: list[NewFiring] = []
                updates: list[tuple[Any, ...]] = []
                for r in rows:
                    rule = ScheduleRule(
                        r[0], r[1], json.loads(r[2]), bool(r[3]), r[4], r[5], r[6], r[7]
                    )
                    plan = planner(rule)
                    if plan is None:
                        continue
                    old_hw = rule.fired_through_ms
                    if old_hw is not None and (
                        plan.fired_through_ms is None or plan.fired_through_ms < old_hw
                    ):
                        raise IllegalTransition(
                            f"schedule {rule.name!r}: high-water mark may not move back"
                            f" ({old_hw} -> {plan.fired_through_ms})"
                        )
                    firings.extend(plan.firings)
                    updates.append(
                        (plan.fired_through_ms, plan.next_fire_ms, plan.next_due_ms, rule.id)
                    )
                await conn.executemany(
                    "UPDATE schedules SET fired_through_ms = ?, next_fire_ms = ?,"
                    " next_due_ms = ? WHERE id = ?",
                    updates,
                )
                inserted = await insert_new(conn, firings)
                if not all(created for _, created in inserted):
                    log.warning(
                        "%d generated firing keys already existed; kept the stored ones",
                        sum(not created for _, created in inserted),
                    )
                tickets.extend(
                    rec.ticket()
                    for rec, created in inserted
                    if created and rec.state is FiringState.COMMITTED
                )
            return tickets

        return await self._write(unit)
