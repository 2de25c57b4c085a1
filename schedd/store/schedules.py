"""The schedule side of the SQLite store: reconcile, the admin API's CRUD, and dispatch.

A mixin of :class:`~schedd.store.sqlite.SqliteStore`. Config schedules (``reconcile``) and API
schedules (``add_schedule``, ``add_schedules``) are encoded by one helper
(:func:`~schedd.store.rows.spec_text`) and inserted by one (:func:`_insert_schedules`), so both
store the same rule, content-addressed payload, digest and task kind, and a schedule reads back
the same whichever way it came in. One API schedule and a thousand take the same path
(:func:`_add_new`): check every name, then insert them all in one unit.
Removing a schedule deletes only its row: firings and runs keep no foreign key to it and stay as
history.

Both hot paths work in whole statements, not per row: reconcile inserts thousands of schedules
(and their distinct payloads) per INSERT, and the dispatch transaction reads, plans and writes a
step of schedules with one SELECT, one UPDATE of their marks and one INSERT of their firings.
Each statement pays a call from Python into SQLite, and ``executemany`` steps once per row, so
per-row statements cost more than the work they do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from schedd.errors import Conflict, IllegalTransition, InvalidArgument, NotFound
from schedd.model import FiringState, ScheduleSpec, Source
from schedd.store.base import StoreMixin
from schedd.store.contract import Planner, ScheduleToAdd
from schedd.store.intake import insert_fresh, store_payloads
from schedd.store.records import (
    Expectation,
    NewFiring,
    ReconcileSummary,
    ScheduleRecord,
    ScheduleRule,
    Ticket,
)
from schedd.store.rows import (
    SCHEDULE_SELECT,
    SpecText,
    chunks,
    marks,
    rule_dict,
    schedule_row,
    spec_text,
)
from schedd.store.writer import Conn

log = logging.getLogger("schedd.store")

#: How an operator is told where a schedule of that name came from.
_ORIGIN = {
    Source.CONFIG.value: "defined in the config file",
    Source.API.value: "added through the admin API",
}

_INSERT_SCHEDULE = (
    "INSERT INTO schedules (name, source, rule, payload_id, spec_hash, task_kind,"
    " next_fire_ms, next_due_ms, paused, created_ms, updated_ms) VALUES "
)
_SCHEDULE_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Schedules per INSERT statement (11 parameters each, under SQLite's 32 766).
SCHEDULES_PER_INSERT = 2000
#: Schedules the dispatch transaction reads, plans and writes per step: large enough that the
#: statements are few, small enough that a 500 000-firing pulse never holds all its rows at
#: once and the event loop (admin reads, ``status``) gets a turn every few milliseconds. Its
#: marks UPDATE binds 4 parameters per schedule, well under SQLite's limit.
DISPATCH_STEP = 500


class NewSchedule(NamedTuple):
    """A schedule about to be inserted or redefined: its definition, encoded, and its marks.

    A named tuple rather than a frozen dataclass: as immutable, and built in less than half
    the time (``add_many`` builds a thousand per request)."""

    spec: ScheduleSpec
    text: SpecText
    next_fire_ms: int | None
    next_due_ms: int | None
    paused: bool


async def _insert_schedules(
    conn: Conn, new: Sequence[NewSchedule], now_ms: int
) -> list[tuple[int, int]]:
    """Insert ``new`` (names not stored yet), a few multi-row statements for any number.

    Returns ``(schedule id, payload id)`` of each, in input order (``RETURNING`` gives rows in
    no stated order, so they are matched back by name)."""
    payload_ids = await store_payloads(conn, [n.text.body for n in new])
    ids: dict[str, int] = {}
    for start in range(0, len(new), SCHEDULES_PER_INSERT):
        part = new[start : start + SCHEDULES_PER_INSERT]
        rows = await conn.execute_fetchall(
            _INSERT_SCHEDULE + ", ".join([_SCHEDULE_ROW] * len(part)) + " RETURNING name, id",
            [
                v
                for n, payload_id in zip(part, payload_ids[start : start + len(part)], strict=True)
                for v in (
                    n.spec.name,
                    n.spec.source.value,
                    n.text.rule,
                    payload_id,
                    n.text.digest,
                    n.text.task_kind,
                    n.next_fire_ms,
                    n.next_due_ms,
                    int(n.paused),
                    now_ms,
                    now_ms,
                )
            ],
        )
        ids.update((str(r[0]), int(r[1])) for r in rows)
    return [(ids[n.spec.name], p) for n, p in zip(new, payload_ids, strict=True)]


async def _add_new(conn: Conn, new: Sequence[NewSchedule], now_ms: int) -> list[ScheduleRecord]:
    """Insert ``new``, all or none: the one path of ``add_schedule`` and ``add_schedules``.

    Every name is checked before anything is written, so a refused batch names the schedule at
    fault instead of failing on SQLite's UNIQUE constraint halfway (the unit's rollback would
    undo that part too)."""
    position: dict[str, int] = {}
    for i, n in enumerate(new):
        if position.setdefault(n.spec.name, i) != i:
            raise InvalidArgument(f"schedule {n.spec.name!r} is given twice; nothing was added")
    taken: list[tuple[str, str]] = []
    for chunk in chunks(list(position)):
        rows = await conn.execute_fetchall(
            f"SELECT name, source FROM schedules WHERE name IN ({marks(len(chunk))})", chunk
        )
        taken += ((str(r[0]), str(r[1])) for r in rows)
    if taken:
        name, source = min(taken, key=lambda t: position[t[0]])
        origin = _ORIGIN.get(source, f"source {source!r}")
        more = f"; so do {len(taken) - 1} more of the names given" if len(taken) > 1 else ""
        none = "; nothing was added" if len(new) > 1 else ""
        raise Conflict(f"schedule {name!r} already exists ({origin}){more}{none}")
    stored = await _insert_schedules(conn, new, now_ms)
    return [
        ScheduleRecord.inserted(
            sid, n.spec, n.paused, n.next_fire_ms, n.next_due_ms, now_ms, payload_id
        )
        for n, (sid, payload_id) in zip(new, stored, strict=True)
    ]


async def _held_elsewhere(conn: Conn, names: Sequence[str]) -> set[str]:
    """Which of ``names`` a schedule of another source holds (by the name index, a chunk at a
    time, so the cost follows the config's new names, not the store's size)."""
    held: set[str] = set()
    for chunk in chunks(names):
        rows = await conn.execute_fetchall(
            f"SELECT name FROM schedules WHERE name IN ({marks(len(chunk))}) AND source != ?",
            [*chunk, Source.CONFIG.value],
        )
        held.update(str(r[0]) for r in rows)
    return held


_BY_NAME = SCHEDULE_SELECT + " WHERE s.name = ?"


def _named(rows: Sequence[Any], name: str) -> ScheduleRecord:
    if not rows:
        raise NotFound(f"schedule {name!r} does not exist")
    return schedule_row(rows[0])


async def _select_schedule(conn: Conn, name: str) -> ScheduleRecord:
    """The schedule as the write transaction sees it (the reader may not see it yet)."""
    return _named(list(await conn.execute_fetchall(_BY_NAME, (name,))), name)


_DISPATCH_SELECT = (
    "SELECT id, name, rule, paused, fired_through_ms, next_fire_ms, next_due_ms, payload_id"
    " FROM schedules WHERE id IN ({})"
)
#: New marks for many schedules in one statement (``executemany`` steps once per row).
_SET_MARKS = (
    "UPDATE schedules SET fired_through_ms = v.column2, next_fire_ms = v.column3,"
    " next_due_ms = v.column4 FROM (VALUES {}) AS v WHERE schedules.id = v.column1"
)


def _checked(rule: ScheduleRule, fired_through_ms: int | None) -> None:
    """The high-water mark only moves forward: refuse a plan that would move it back."""
    old = rule.fired_through_ms
    if old is not None and (fired_through_ms is None or fired_through_ms < old):
        raise IllegalTransition(
            f"schedule {rule.name!r}: high-water mark may not move back"
            f" ({old} -> {fired_through_ms})"
        )


async def _dispatch_step(conn: Conn, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
    """Plan and store one step of a dispatch: read the rules, plan each, write the new marks
    and the firings, and return the tickets of the committed firings newly inserted."""
    rows = await conn.execute_fetchall(
        _DISPATCH_SELECT.format(marks(len(schedule_ids))), schedule_ids
    )
    firings: list[NewFiring] = []
    new_marks: list[int | None] = []
    for r in rows:
        text = r[2]
        rule = ScheduleRule(
            r[0], r[1], rule_dict(text), bool(r[3]), r[4], r[5], r[6], r[7], rule_json=text
        )
        plan = planner(rule)
        if plan is None:
            continue
        _checked(rule, plan.fired_through_ms)
        firings.extend(plan.firings)
        new_marks += (rule.id, plan.fired_through_ms, plan.next_fire_ms, plan.next_due_ms)
    if new_marks:
        await conn.execute_fetchall(
            _SET_MARKS.format(", ".join(["(?, ?, ?, ?)"] * (len(new_marks) // 4))), new_marks
        )
    ids = await insert_fresh(conn, firings)
    if None in ids:
        log.warning(
            "%d generated firing keys already existed; kept the stored ones", ids.count(None)
        )
    return [
        f.ticket(fid)
        for f, fid in zip(firings, ids, strict=True)
        if fid is not None and f.state is FiringState.COMMITTED
    ]


#: The loader's columns and the WHERE term of the partial index ``schedules_due``.
_DUE_SELECT = (
    "SELECT next_due_ms, id, task_kind = 'python', json_extract(rule, '$.lane') FROM schedules"
    " WHERE next_due_ms IS NOT NULL AND paused = 0"
)


class SchedulesMixin(StoreMixin):
    async def reconcile(
        self,
        specs: Sequence[ScheduleSpec],
        *,
        initial: Callable[[ScheduleSpec, int | None], tuple[int | None, int | None]],
        now_ms: int,
    ) -> ReconcileSummary:
        async def unit(conn: Conn) -> ReconcileSummary:
            # Only the config's own rows: a store of a million api schedules must not be read
            # into memory at every start (it was 400 MB and 1.5 s of a 2 s start-up).
            rows = await conn.execute_fetchall(
                "SELECT id, name, spec_hash, fired_through_ms FROM schedules WHERE source = ?",
                (Source.CONFIG.value,),
            )
            stored = {r[1]: r for r in rows}
            held = await _held_elsewhere(conn, [s.name for s in specs if s.name not in stored])
            added: list[NewSchedule] = []
            changed: list[tuple[NewSchedule, int]] = []
            unchanged = 0
            for spec in specs:
                if spec.name in held:
                    raise Conflict(
                        f"schedules.{spec.name}: a schedule of that name was added through the"
                        " admin API; remove it first or rename the config schedule"
                    )
                row = stored.get(spec.name)
                text = spec_text(spec)
                if row is not None and row[2] == text.digest:
                    unchanged += 1
                    continue
                marks_ = initial(spec, None if row is None else row[3])
                new = NewSchedule(spec, text, *marks_, paused=False)
                if row is None:
                    added.append(new)
                else:
                    changed.append((new, row[0]))
            await _insert_schedules(conn, added, now_ms)
            payload_ids = await store_payloads(conn, [n.text.body for n, _ in changed])
            await conn.executemany(
                "UPDATE schedules SET rule = ?, payload_id = ?, spec_hash = ?,"
                " task_kind = ?, next_fire_ms = ?, next_due_ms = ?, updated_ms = ?"
                " WHERE id = ?",
                [
                    (
                        n.text.rule,
                        payload_id,
                        n.text.digest,
                        n.text.task_kind,
                        n.next_fire_ms,
                        n.next_due_ms,
                        now_ms,
                        sid,
                    )
                    for (n, sid), payload_id in zip(changed, payload_ids, strict=True)
                ],
            )
            wanted = {s.name for s in specs}
            removed = sorted(name for name in stored if name not in wanted)
            for chunk in chunks(removed):
                await conn.execute_fetchall(
                    f"DELETE FROM schedules WHERE name IN ({marks(len(chunk))})", chunk
                )
            return ReconcileSummary(
                tuple(n.spec.name for n in added),
                tuple(n.spec.name for n, _ in changed),
                tuple(removed),
                unchanged,
            )

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
        new = [NewSchedule(spec, spec_text(spec), next_fire_ms, next_due_ms, paused)]

        async def unit(conn: Conn) -> ScheduleRecord:
            await _add_new(conn, new, now_ms)
            return await _select_schedule(conn, spec.name)

        return await self._write(unit)

    async def add_schedules(
        self, schedules: Sequence[ScheduleToAdd], *, now_ms: int
    ) -> list[ScheduleRecord]:
        # Encoded before the unit is queued: the transaction holds the writer only for SQL.
        new = [
            NewSchedule(s.spec, spec_text(s.spec), s.next_fire_ms, s.next_due_ms, s.paused)
            for s in schedules
        ]
        return await self._write(lambda conn: _add_new(conn, new, now_ms))

    async def remove_schedule(self, name: str) -> ScheduleRecord:
        async def unit(conn: Conn) -> ScheduleRecord:
            record = await _select_schedule(conn, name)
            await conn.execute("DELETE FROM schedules WHERE id = ?", (record.id,))
            return record

        return await self._write(unit)

    async def set_paused(self, name: str, paused: bool, now_ms: int) -> ScheduleRecord:
        async def unit(conn: Conn) -> ScheduleRecord:
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
    ) -> list[tuple[int, int, bool, str]]:
        due, sid = after if after is not None else (-(2**62), -1)
        # The rest of the cursor's due time, then the later ones: two seeks on schedules_due.
        # ``(next_due_ms, id) > (?, ?)`` seeks on next_due_ms alone and walks every schedule of
        # the cursor's due time again for each page, so loading a 500 000 pulse due in the same
        # millisecond was quadratic (2.3 s of reader time, pages of 35 ms at the end).
        rows = await self._read(
            f"SELECT * FROM ({_DUE_SELECT} AND next_due_ms = ?1 AND id > ?2"
            " AND next_due_ms <= ?3 ORDER BY id LIMIT ?4)"
            f" UNION ALL SELECT * FROM ({_DUE_SELECT} AND next_due_ms > ?1"
            " AND next_due_ms <= ?3 ORDER BY next_due_ms, id LIMIT ?4) LIMIT ?4",
            (due, sid, until_ms, limit),
        )
        return [(int(r[0]), int(r[1]), bool(r[2]), str(r[3])) for r in rows]

    async def dispatch(self, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
        async def unit(conn: Conn) -> list[Ticket]:
            tickets: list[Ticket] = []
            for step in chunks(list(schedule_ids), DISPATCH_STEP):
                tickets += await _dispatch_step(conn, step, planner)
            return tickets

        return await self._write(unit)
